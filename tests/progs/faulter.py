#!/usr/bin/env python3
"""gracerun's signal inbox in a process that can commit a genuine fault.

    faulter.py KIND LOOP      KIND: segv, bus, ill, trap, fpe, abort; LOOP: mini, uvloop

Sets up signals exactly as gracerun does (signals.hold(), then a SignalInbox
on the loop gracerun would use), prints "ready pid=P", and prints
"dispatched N" for every signal the inbox dispatches.  On SIGUSR1 it commits
the fault KIND in its main thread, while the inbox's thread waits for the
same signal number: a real fault, raised by the CPU (or abort(3)), not sent.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import resource
import signal
import sys
import tempfile

from gracerun.core import signals
from gracerun.core.loop import new_loop

# x86-64 machine code for the faults only the CPU raises.
CODE = {
    "ill": b"\x0f\x0b",  # ud2
    "trap": b"\xcc\xc3",  # int3; ret (SIGTRAP, fatal at its default action)
    "fpe": b"\xb8\x01\x00\x00\x00\x31\xc9\xf7\xf1\xc3",  # mov eax,1; xor ecx,ecx; div ecx
}


def fault(kind: str) -> None:
    if kind == "segv":
        ctypes.string_at(0)
    elif kind == "bus":
        with tempfile.TemporaryFile() as fh:
            fh.write(b"x" * mmap.PAGESIZE)
            fh.flush()
            mem = mmap.mmap(fh.fileno(), mmap.PAGESIZE)
            os.ftruncate(fh.fileno(), 0)
            mem[0]  # the page is gone: SIGBUS
    elif kind == "abort":
        os.abort()
    else:
        mem = mmap.mmap(-1, mmap.PAGESIZE,
                        prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        mem.write(CODE[kind])
        address = ctypes.addressof(ctypes.c_char.from_buffer(mem))
        ctypes.CFUNCTYPE(None)(address)()
    os.write(1, b"survived the fault\n")


def main() -> None:
    kind, loop_kind = sys.argv[1], sys.argv[2]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the faults must not leave core files
    signals.hold()
    loop = new_loop(loop_kind != "mini", loop_kind)

    def dispatch(signum: int) -> None:
        os.write(1, f"dispatched {signum}\n".encode())
        if signum == signal.SIGUSR1:
            fault(kind)

    signals.SignalInbox(loop, dispatch).install()
    os.write(1, f"ready pid={os.getpid()}\n".encode())
    loop.run_forever()


if __name__ == "__main__":
    main()
