"""gracerun's own log on stderr: prefixed text (default) or one JSON object a line.

Events carry structured fields (`extra={"fields": {...}}`); the text format
renders them as key=value after the message so they stay grep-able.

Why a writer thread.  gracerun shares its stderr with the service, and in a
container that is usually a pipe to the log driver; when the driver stalls
(Docker's default, blocking, log mode) a write(2) blocks, and a PID 1 blocked
in write() forwards nothing, reaps nothing and never sends its SIGKILL.
The core must never block on its own log, so lines go to a bounded queue
and a writer thread does the writing: when the queue is full, new lines are
dropped and counted, and once the writer gets through again it logs how
many were lost (`dropped_lines()` has the total, for metrics).
The other ways out do not work on a shared stderr: O_NONBLOCK is a flag of
the open file description, shared with the service, whose writes would then
fail with EAGAIN; reopening /proc/self/fd/2 gives a description of its own
only for pipes and terminals (not for sockets, such as journald's), and
poll() before write() races with the service filling the pipe in between.
The thread starts with the first line (a quiet run has none) and sleeps on a
condition while idle: no wake-ups.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from typing import Any

log = logging.getLogger("gracerun")

# Bytes of log lines held while stderr does not take them: a few hundred lines.
QUEUE_LIMIT = 128 * 1024
# How long the last lines may hold up gracerun's exit when stderr is stalled.
EXIT_FLUSH_SECONDS = 0.25


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _render(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = _printable(str(value))
    return f'"{text}"' if (" " in text or not text) else text


def _printable(text: str) -> str:
    """Control characters and escape sequences shown as \\xNN, never sent to a terminal:
    fields carry text from outside (exception messages, hook output, server answers)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256
                   else f"\\u{ord(c):04x}" for c in text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        line = f"gracerun: {level}{_printable(record.getMessage())}"
        extra = " ".join(f"{k}={_render(v)}" for k, v in _fields(record).items())
        return f"{line} {extra}" if extra else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": "gracerun",
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        return json.dumps(entry, default=str)


class _Writer:
    """A bounded queue of lines and the thread that writes them to one fd."""

    def __init__(self, fd: int, limit: int = QUEUE_LIMIT) -> None:
        self._fd = fd
        self._limit = limit
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes in the queue plus the chunk being written
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self.dropped = 0  # lines lost since start
        self._unreported = 0  # lines lost since the last "dropped" event

    def put(self, data: bytes) -> None:
        """Queue one line, or drop it when the queue is full; never blocks on I/O."""
        with self._cond:
            if self._queued + len(data) > self._limit or not self._started():
                self.dropped += 1
                self._unreported += 1
                return
            self._queue.append(data)
            self._queued += len(data)
            self._cond.notify_all()

    def _started(self) -> bool:
        """Start the writer thread on first use; False when none can be started
        (a pids limit): the line is dropped and counted, the next one retries."""
        if self._thread is None:
            thread = threading.Thread(target=self._run, name="gracerun-log", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                return False
            self._thread = thread
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until every queued line is written, at most `timeout`; True if done."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queued:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        # Signals are gracerun's main thread's business (see signals.py), even
        # in a process that never called signals.hold().
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                chunk = b"".join(self._queue)
                self._queue.clear()
            self._write_all(chunk)
            with self._cond:
                self._queued -= len(chunk)
                lost, self._unreported = self._unreported, 0
                self._cond.notify_all()
            if lost:
                event(logging.WARNING, "log lines dropped: stderr was not taking them",
                      lines=lost, dropped_total=self.dropped)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except InterruptedError:
                continue
            except OSError:
                return  # EPIPE, EBADF, ENOSPC: nowhere to log to; do not spin


class _QueueHandler(logging.Handler):
    """Formats a record and hands the line to the writer: the caller never blocks."""

    def __init__(self, writer: _Writer) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self.writer.put(line.encode(errors="replace"))


_writer = _Writer(2)


def setup(verbosity: int, fmt: str) -> None:
    """Quiet by default (info and up); -v adds signals, reaps and escalations."""
    handler = _QueueHandler(_writer)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)


def flush(timeout: float = EXIT_FLUSH_SECONDS) -> bool:
    """Before exit: give the queued lines at most `timeout` to reach stderr."""
    return _writer.flush(timeout)


def dropped_lines() -> int:
    """Log lines dropped so far because stderr did not take them (for metrics)."""
    return _writer.dropped


def event(level: int, msg: str, *args: Any, **fields: Any) -> None:
    """Log msg with structured fields."""
    log.log(level, msg, *args, extra={"fields": fields})
