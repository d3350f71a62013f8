"""A small client for HAProxy's Runtime API (the stats socket), for the haproxy hook and probe.

HAProxy listens for it on a unix socket or a TCP address (`stats socket ... level admin`
in its `global` section).  This client speaks the non-interactive mode only: connect,
send one command line and "\\n", read until HAProxy closes the connection.  One request
per connection, like httpclient.py: no session state to get wrong, and a request that
fails leaves nothing behind.  Every request is bounded in time (one `timeout` for
connecting, sending and reading) and in size (`max_bytes` of answer).

The API answers errors in plain text with no status code ("No such server.",
"Permission denied", "Unknown command..."), so each answer is checked against the
texts HAProxy uses for failures, and the failure becomes one HaproxyError line:

    haproxy /run/haproxy/admin.sock: no server app/web1
    haproxy 127.0.0.1:9999: connection refused
    haproxy /run/haproxy/admin.sock: timed out after 2s

Like clients/http.py, asyncio is imported only when a request is made: the config's
validation loads this module (the hook's record, parse_address) before the service is
spawned, and asyncio would add tens of milliseconds to the service's start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gracerun.errors import GracerunError
from gracerun.observe import redact

if TYPE_CHECKING:
    import asyncio

MAX_ANSWER = 1024 * 1024  # `show stat` of one backend is a few kB per server

# HAProxy's own rule for proxy and server names (cfgparse's invalid_char): anything else
# cannot name one, and a ';' or a space would split the command line into others.
NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")
STATES = ("drain", "maint", "ready")

# How HAProxy 2.x begins the answers of commands that failed (cli_err and friends).
_ERROR_STARTS = ("Unknown command", "Permission denied", "No such ", "Can't find ",
                 "Require ", "Missing ", "Invalid ", "usage:", "Usage:", "Error", "error")
_HINTS = {"Permission denied": ' (the stats socket needs "level admin")'}
_ADDRESS = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:/\[\]]+)):(?P<port>\d{1,5})$")


class HaproxyError(GracerunError):
    """A Runtime API request failed: connection, timeout, or an error answer.

    The message is one line, starting "haproxy <socket or address>: ".
    """


class HaproxyTimeout(HaproxyError):
    """The request did not complete within its timeout."""


@dataclass(frozen=True, slots=True)
class ServerStats:
    """One server's row of `show stat`."""

    scur: int  # sessions HAProxy holds to this server now (requests in flight)
    stot: int  # sessions it ever sent to this server (cumulative)
    status: str  # "UP", "DRAIN", "MAINT", "DOWN", "no check", "UP 1/3", ...
    qcur: int = 0  # requests queued for this server (maxconn reached), not sent yet


def parse_address(address: str) -> tuple[str, int]:
    """"HOST:PORT" ("127.0.0.1:9999", "[::1]:9999", "lb:9999") as (host, port)."""
    m = _ADDRESS.match(address)
    if m is None or not 1 <= int(m["port"]) <= 65535:
        raise HaproxyError(f'haproxy {address}: expected "HOST:PORT" such as '
                           f'"127.0.0.1:9999" or a socket path')
    return m["v6"] or m["host"], int(m["port"])


def is_socket_path(target: str) -> bool:
    """A target with a "/" is a unix socket path; anything else is "HOST:PORT"."""
    return "/" in target


async def command(target: str, line: str, timeout: float, *,
                  max_bytes: int = MAX_ANSWER) -> str:
    """Send one command line to HAProxy at `target` and return its answer.

    `target` is a unix socket path (it contains a "/") or "HOST:PORT".  An answer in
    which HAProxy reports a failure raises HaproxyError naming the command, as does
    every connection problem; HaproxyTimeout when `timeout` seconds ran out.
    CancelledError passes through, and the connection is closed on every path out.
    """
    answer = await _request(target, line, timeout, max_bytes)
    failure = _failure(answer)
    if failure:
        raise HaproxyError(f"haproxy {target}: {line}: {failure}")
    return answer


async def set_server_state(target: str, backend: str, server: str, state: str,
                           timeout: float) -> None:
    """`set server BACKEND/SERVER state STATE` (drain, maint or ready)."""
    _check_names(target, backend, server)
    if state not in STATES:
        raise HaproxyError(f"haproxy {target}: bad server state {state!r}, expected one of "
                           f"{', '.join(STATES)}")
    line = f"set server {backend}/{server} state {state}"
    answer = await _request(target, line, timeout, MAX_ANSWER)
    if answer.strip():  # success is an empty answer
        raise HaproxyError(f"haproxy {target}: {_named(answer, backend, server, line)}")


async def server_stats(target: str, backend: str, server: str, timeout: float) -> ServerStats:
    """The server's row of `show stat` (the CSV whose header line starts "# ")."""
    _check_names(target, backend, server)
    # `show stat <proxy> 4 -1`: the servers (type 4) of one backend, whatever their id.
    # A name of digits alone would be read as a proxy id, so then ask for every proxy.
    line = f"show stat {'-1' if backend.isdigit() else backend} 4 -1"
    answer = await _request(target, line, timeout, MAX_ANSWER)
    if not answer.startswith("# "):
        raise HaproxyError(f"haproxy {target}: {_named(answer, backend, server, line)}")
    import csv  # HAProxy quotes fields that hold commas (check descriptions, ...)

    rows = csv.reader(answer[2:].splitlines())
    header = next(rows, [])
    try:
        col = {name: header.index(name) for name in ("pxname", "svname", "scur", "stot",
                                                     "status", "qcur")}
    except ValueError:
        raise HaproxyError(f"haproxy {target}: {line}: no pxname, svname, scur, stot, qcur "
                           f"and status columns in the answer") from None
    for row in rows:
        if len(row) > max(col.values()) and row[col["pxname"]] == backend \
                and row[col["svname"]] == server:
            try:
                return ServerStats(scur=int(row[col["scur"]] or 0),
                                   stot=int(row[col["stot"]] or 0),
                                   status=redact.text(row[col["status"]], 100),
                                   qcur=int(row[col["qcur"]] or 0))
            except ValueError:
                raise HaproxyError(f"haproxy {target}: {line}: bad numbers in the row of "
                                   f"{backend}/{server}") from None
    raise HaproxyError(f"haproxy {target}: no server {backend}/{server}")


# ------------------------------------------------------------------ internals


def _check_names(target: str, backend: str, server: str) -> None:
    for what, name in (("backend", backend), ("server", server)):
        if not NAME.match(name):
            raise HaproxyError(f"haproxy {target}: bad {what} name {name!r}")


def _failure(answer: str) -> str:
    """The first line of an answer that reports a failure, else ""."""
    first = answer.lstrip().partition("\n")[0].strip()
    if first.startswith(_ERROR_STARTS) or " expects " in first:
        hint = next((h for k, h in _HINTS.items() if first.startswith(k)), "")
        return redact.text(first, 200) + hint
    return ""


def _named(answer: str, backend: str, server: str, line: str) -> str:
    """An error answer in our words where we know it, else HAProxy's with the command."""
    first = answer.strip().partition("\n")[0].strip()
    if first == "No such server.":
        return f"no server {backend}/{server}"
    if first in ("No such backend.", "No such proxy.", "Can't find backend."):
        return f"no backend {backend}"
    return f"{line}: {_failure(answer) or redact.text(first, 200) or 'empty answer'}"


async def _request(target: str, line: str, timeout: float, max_bytes: int) -> str:
    if not line or any(c in line for c in "\r\n\0"):
        raise HaproxyError(f"haproxy {target}: bad command line {line!r}")
    if not target or "\0" in target:
        raise HaproxyError(f"haproxy {target!r}: expected a socket path or HOST:PORT")
    import asyncio

    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            if is_socket_path(target):
                reader, writer = await asyncio.open_unix_connection(target)
            else:
                host, port = parse_address(target)
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(line.encode("latin-1", "replace") + b"\n")
            await writer.drain()
            answer = bytearray()
            while chunk := await reader.read(64 * 1024):
                answer += chunk
                if len(answer) > max_bytes:
                    raise HaproxyError(f"haproxy {target}: {line}: answer over the "
                                       f"{max_bytes} byte limit")
        return answer.decode("latin-1")
    except TimeoutError:
        raise HaproxyTimeout(f"haproxy {target}: timed out after {timeout:g}s") from None
    except ConnectionRefusedError:
        raise HaproxyError(f"haproxy {target}: connection refused") from None
    except (ConnectionResetError, BrokenPipeError):
        raise HaproxyError(f"haproxy {target}: connection reset by peer") from None
    except FileNotFoundError:
        raise HaproxyError(f"haproxy {target}: no such socket") from None
    except PermissionError:
        raise HaproxyError(f"haproxy {target}: permission denied (on the socket file)") from None
    except OSError as exc:  # resolution (gaierror), unreachable, not a socket, ...
        raise HaproxyError(f"haproxy {target}: connection failed: {exc.strerror or exc}") \
            from None
    finally:
        if writer is not None:
            writer.transport.abort()  # nothing left to say, and no reason to wait for it
