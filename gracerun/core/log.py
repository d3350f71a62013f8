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
lock while idle: no wake-ups.

Why not the logging module.  `import logging` costs about 7 ms (it brings
threading, traceback, tokenize, string and compiles regular expressions), paid
before the service starts on every container start, for features gracerun does
not use: it logs to one place, in one of two formats, from its own code only.
So this module is the whole of it: levels, records, the two formats and the
writer, on `_thread` (threading costs another 1.5 ms).  Tests read records
with `capture()`.
"""

from __future__ import annotations

import _thread
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_LEVEL_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}

# Bytes of log lines held while stderr does not take them: a few hundred lines.
QUEUE_LIMIT = 128 * 1024
# How long the last lines may hold up gracerun's exit when stderr is stalled.
EXIT_FLUSH_SECONDS = 0.25


class Record:
    """One event: a level, a %-style message with its arguments, structured fields."""

    __slots__ = ("args", "created", "fields", "level", "msg")

    def __init__(self, level: int, msg: str, args: tuple[Any, ...],
                 fields: dict[str, Any]) -> None:
        self.level = level
        self.msg = msg
        self.args = args
        self.fields = fields
        self.created = time.time()

    @property
    def level_name(self) -> str:
        return _LEVEL_NAMES.get(self.level) or f"level{self.level}"

    def message(self) -> str:
        return self.msg % self.args if self.args else self.msg


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


def format_text(record: Record) -> str:
    """`gracerun: [level: ]message key=value ...` (no level shown for info)."""
    level = "" if record.level == INFO else f"{record.level_name}: "
    line = f"gracerun: {level}{_printable(record.message())}"
    extra = " ".join(f"{k}={_render(v)}" for k, v in record.fields.items())
    return f"{line} {extra}" if extra else line


def format_json(record: Record) -> str:
    """One JSON object: ts (UTC, milliseconds), level, logger, msg, then the fields."""
    import json

    entry: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.created * 1000) % 1000:03d}Z",
        "level": record.level_name,
        "logger": "gracerun",
        "msg": record.message(),
    }
    entry.update(record.fields)
    return json.dumps(entry, default=str)


class _Writer:
    """A bounded queue of lines and the thread that writes them to one fd.

    Two binary semaphores instead of a condition variable (no threading):
    `_wake` is released when there is something to write and the writer sleeps
    on it; `_drained`, when set, is released once the queue is empty (flush()).
    Both are released only under `_mutex`, and only when held, so never twice.
    """

    def __init__(self, fd: int, limit: int = QUEUE_LIMIT) -> None:
        self._fd = fd
        self._limit = limit
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes in the queue plus the chunk being written
        self._mutex = _thread.allocate_lock()
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self._drained: Any = None  # a held lock while flush() waits
        self._started = False
        self.dropped = 0  # lines lost since start
        self._unreported = 0  # lines lost since the last "dropped" event

    def put(self, data: bytes) -> None:
        """Queue one line, or drop it when the queue is full; never blocks on I/O."""
        with self._mutex:
            if self._queued + len(data) > self._limit or not self._start():
                self.dropped += 1
                self._unreported += 1
                return
            self._queue.append(data)
            self._queued += len(data)
            if self._wake.locked():
                self._wake.release()

    def _start(self) -> bool:
        """Start the writer thread on first use; False when none can be started
        (a pids limit): the line is dropped and counted, the next one retries."""
        if not self._started:
            try:
                _thread.start_new_thread(self._run, ())
            except RuntimeError:
                return False
            self._started = True
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until every queued line is written, at most `timeout`; True if done."""
        with self._mutex:
            if not self._queued:
                return True
            if self._drained is None:
                self._drained = _thread.allocate_lock()
                self._drained.acquire()
            drained = self._drained
        if drained.acquire(timeout=max(0.0, timeout)):
            drained.release()  # let any other flush() through too
        with self._mutex:
            return not self._queued

    def _run(self) -> None:
        # Signals are gracerun's main thread's business (see signals.py), even
        # in a process that never called signals.hold().
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        while True:
            with self._mutex:
                chunk = b"".join(self._queue)
                self._queue.clear()
            if not chunk:
                self._wake.acquire()  # sleep until put() has something
                continue
            self._write_all(chunk)
            with self._mutex:
                self._queued -= len(chunk)
                lost, self._unreported = self._unreported, 0
                if not self._queued and self._drained is not None:
                    self._drained.release()
                    self._drained = None
            if lost:
                event(WARNING, "log lines dropped: stderr was not taking them",
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


_writer = _Writer(2)
# Until setup(): warnings and errors, as text (a subcommand, a test).
_threshold = WARNING
_format = format_text
_captures: list[tuple[int, list[Record]]] = []


def setup(verbosity: int, fmt: str) -> None:
    """Quiet by default (info and up); -v adds signals, reaps and escalations."""
    global _threshold, _format
    _threshold = DEBUG if verbosity > 0 else INFO
    _format = format_json if fmt == "json" else format_text


def enabled(level: int) -> bool:
    """Would an event at `level` be logged (or captured)?"""
    return level >= _threshold or any(level >= lowest for lowest, _ in _captures)


def flush(timeout: float = EXIT_FLUSH_SECONDS) -> bool:
    """Before exit: give the queued lines at most `timeout` to reach stderr."""
    return _writer.flush(timeout)


def dropped_lines() -> int:
    """Log lines dropped so far because stderr did not take them (for metrics)."""
    return _writer.dropped


def event(level: int, msg: str, *args: Any, **fields: Any) -> None:
    """Log msg (%-style with args) with structured fields; never blocks on stderr."""
    if not enabled(level):
        return
    record = Record(level, msg, args, fields)
    captured = False
    for lowest, records in _captures:
        if level >= lowest:
            records.append(record)
            captured = True
    if captured or level < _threshold:
        return
    try:
        line = _format(record) + "\n"
    except Exception as exc:  # a bad %-format or field must not end gracerun
        line = f"gracerun: error: cannot format a log line: {exc!r} msg={msg!r}\n"
    _writer.put(line.encode(errors="replace"))


def adopt(logger_name: str) -> None:
    """Send a library's records of Python's logging module (asyncio's "Exception
    in callback", "Task exception was never retrieved") through this log.

    Left alone, they reach logging's last-resort handler, which writes to
    sys.stderr directly: a blocking write on a stalled log pipe, in the middle of
    the event loop.  Called once asyncio is loaded (it imports logging itself).
    """
    import logging

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                message = record.getMessage()
            except Exception:  # a library's bad %-format: still say something
                message = str(record.msg)
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info and record.exc_info[1] is not None:
                fields["error"] = repr(record.exc_info[1])
            level = max((lv for lv in _LEVEL_NAMES if lv <= record.levelno), default=DEBUG)
            event(level, message, **fields)

    logger = logging.getLogger(logger_name)
    logger.handlers[:] = [Forward()]
    logger.propagate = False


@contextmanager
def capture(level: int = DEBUG) -> Iterator[list[Record]]:
    """For tests: collect the events at `level` and up while the block runs,
    instead of writing them."""
    records: list[Record] = []
    entry = (level, records)
    _captures.append(entry)
    try:
        yield records
    finally:
        _captures.remove(entry)
