"""nginx (open source) for the nginx hook: an upstream include file, the master, its workers.

Open-source nginx has no API to change an upstream at run time (that is NGINX Plus), so
taking a server out means editing the configuration and reloading:

    upstream app { include /etc/nginx/upstreams/app.conf; }      # nginx.conf, the deploy's
    server 10.0.0.5:8080 max_fails=3;                            # app.conf, one line each
    server 10.0.0.6:8080 down;                                   # ... taken out

`set_down()` adds or removes the `down` parameter of one server's `server` directives and
writes the file atomically (a temporary file in the same directory, renamed over it, with
the file's owner and mode), so nginx never reads half a file.  `reload()` sends SIGHUP to
the master, which re-reads its configuration and, if it is valid, starts new workers and
asks the old ones to finish their requests and exit; if it is not valid it logs why and
keeps the old workers.  So a new worker generation, read from /proc (the master's children
and their titles), is the proof that the reload took: `workers()` before, `took()` after.

Nothing here imports asyncio: the hook polls; these are small synchronous file and /proc
reads.  Errors are one NginxError line naming the file or the PID.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from gracerun.errors import GracerunError

# A `server ADDRESS [params];` directive (possibly spread over lines), found in the text
# with its comments blanked out.  `server {` blocks do not match (no "{" in address or
# parameters).
_SERVER = re.compile(r"(?<![^\s;{}])server\s+(?P<addr>[^\s;{}#]+)(?P<params>[^;{}]*);")
# The `down` parameter with the blanks before it on its line (never a newline: the text
# before it could end in a comment, which would then swallow the rest of the directive).
_DOWN = re.compile(r"[ \t]*(?<![^\s])down(?=\s|$)")
_COMMENT = re.compile(r"#[^\n]*")
_TRIES = 3  # read-modify-write attempts when someone else writes the file meanwhile


class NginxError(GracerunError):
    """A step on nginx failed: the file, the pid file, the reload; one line."""


@dataclass(frozen=True, slots=True)
class Edit:
    matched: int  # `server` directives for the address
    changed: bool  # False: they already were as asked


def mark(text: str, server: str, down: bool) -> tuple[str, int]:
    """`text` with every `server <server> ...;` directive marked `down` (or not).

    Returns (new text, how many directives matched).  Only the parameters of matching
    directives change; comments, spacing and every other line stay byte for byte.
    """
    masked = _COMMENT.sub(lambda m: " " * len(m.group()), text)
    out: list[str] = []
    at = 0
    matched = 0
    for m in _SERVER.finditer(masked):
        if m["addr"].strip("\"'") != server:
            continue
        matched += 1
        start, end = m.span("params")
        params = masked[start:end]
        if down:
            if "down" in params.split():
                continue
            cut = start + len(params.rstrip())  # right after the last parameter
            out += [text[at:cut], " down"]
            at = cut
        else:
            for token in _DOWN.finditer(params):
                out.append(text[at:start + token.start()])
                at = start + token.end()
    out.append(text[at:])
    return "".join(out), matched


def addresses(text: str) -> list[str]:
    """The addresses of all `server` directives in `text`, for messages."""
    masked = _COMMENT.sub(lambda m: " " * len(m.group()), text)
    return [m["addr"] for m in _SERVER.finditer(masked)]


def set_down(path: str, server: str, down: bool) -> Edit:
    """Mark `server` down (or up) in the upstream file at `path`, atomically.

    Refuses a symlink (the rename would replace the link, not its target) and anything
    but a regular file.  Keeps the file's mode and owner.  A file without a `server` line
    for `server` is an error.  A file already as asked is left alone (changed=False).
    """
    for _ in range(_TRIES):
        st, text = _read(path)
        new, matched = mark(text, server, down)
        if not matched:
            found = ", ".join(addresses(text)[:8]) or "none"
            raise NginxError(f"nginx: no `server {server}` line in {path} (servers there: "
                             f"{found})")
        if new == text:
            return Edit(matched, changed=False)
        if _replace(path, st, new):
            return Edit(matched, changed=True)
    raise NginxError(f"nginx: {path} kept changing while gracerun rewrote it ({_TRIES} tries)")


def master_pid(pid_file: str) -> int:
    """The PID of the running nginx master named by `pid_file`; NginxError if it is not."""
    try:
        with open(pid_file, "rb") as f:
            raw = f.read(64)
    except FileNotFoundError:
        raise NginxError(f"nginx: pid file {pid_file} is missing (is nginx running, and is "
                         f"pid_file the path of its `pid` directive?)") from None
    except OSError as exc:
        raise NginxError(f"nginx: cannot read pid file {pid_file}: {exc.strerror}") from None
    text = raw.decode("ascii", "replace").strip()
    if not text.isdigit() or int(text) <= 0:
        raise NginxError(f"nginx: pid file {pid_file} holds {text[:20]!r}, not a PID")
    pid = int(text)
    title = _title(pid)
    if title is None:
        raise NginxError(f"nginx: stale pid file {pid_file}: no process {pid}")
    if "master process" not in title:
        raise NginxError(f"nginx: stale pid file {pid_file}: process {pid} is not an nginx "
                         f"master ({title[:60]!r})")
    return pid


def alive(pid: int) -> bool:
    return _title(pid) is not None


def workers(master: int) -> dict[int, str]:
    """The master's children (workers, cache manager/loader) and their process titles."""
    children: dict[int, str] = {}
    for pid in _children(master):
        title = _title(pid)
        if title is not None:
            children[pid] = title
    return children


def reload(master: int) -> None:
    """Ask the master to reload its configuration (SIGHUP), as `nginx -s reload` does."""
    import signal

    try:
        os.kill(master, signal.SIGHUP)
    except ProcessLookupError:
        raise NginxError(f"nginx: master {master} exited before the reload") from None
    except PermissionError:
        raise NginxError(f"nginx: not permitted to signal master {master} (gracerun must "
                         f"run as nginx's user or root, in its PID namespace)") from None


def is_worker(title: str) -> bool:
    """A worker taking new connections ("nginx: worker process"), not one shutting down."""
    return "worker process" in title and "shutting down" not in title


def took(before: dict[int, str], after: dict[int, str]) -> bool:
    """Did a reload between the two snapshots take?  New workers, and no old worker left
    taking new connections (the old ones exit, or say "is shutting down")."""
    new = [pid for pid, title in after.items() if pid not in before and is_worker(title)]
    old = [pid for pid, title in after.items() if pid in before and is_worker(title)]
    return bool(new) and not old


# ------------------------------------------------------------------ internals


def _read(path: str) -> tuple[os.stat_result, str]:
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise NginxError(f"nginx: upstream file {path} does not exist") from None
    except OSError as exc:
        raise NginxError(f"nginx: cannot stat {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise NginxError(f"nginx: {path} is a symlink; gracerun replaces the file by rename, "
                         f"so set upstream_file to the file it points to")
    if not stat.S_ISREG(st.st_mode):
        raise NginxError(f"nginx: {path} is not a regular file")
    try:
        with open(path, "rb") as f:
            data = f.read(16 * 1024 * 1024)
    except OSError as exc:
        raise NginxError(f"nginx: cannot read {path}: {exc.strerror}") from None
    return st, data.decode("utf-8", "surrogateescape")


def _replace(path: str, st: os.stat_result, text: str) -> bool:
    """Write `text` to a new file beside `path` and rename it over `path`; False (nothing
    written) if `path` changed since `st` was taken."""
    import stat
    import tempfile

    directory, name = os.path.split(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".gracerun", dir=directory)
    except OSError as exc:
        raise NginxError(f"nginx: cannot create a temporary file in {directory}: "
                         f"{exc.strerror}") from None
    try:
        try:
            os.write(fd, text.encode("utf-8", "surrogateescape"))
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, st.st_uid, st.st_gid)
                except PermissionError:
                    raise NginxError(f"nginx: cannot keep the owner {st.st_uid}:{st.st_gid} "
                                     f"of {path}: not permitted") from None
            os.fsync(fd)
        finally:
            os.close(fd)
        now = os.lstat(path)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (st.st_ino, st.st_size,
                                                           st.st_mtime_ns):
            os.unlink(tmp)
            return False
        os.replace(tmp, path)
    except (OSError, NginxError) as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, NginxError):
            raise
        raise NginxError(f"nginx: cannot rewrite {path}: {exc.strerror}") from None
    _fsync_dir(directory)
    return True


def _fsync_dir(directory: str) -> None:
    """Make the rename durable; a directory that cannot be opened or synced is no error."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _title(pid: int) -> str | None:
    """The process title ("nginx: worker process"), None if no such live process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        return None
    if not raw:  # a zombie, or a kernel thread
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def _children(pid: int) -> list[int]:
    """Children of `pid`: /proc/PID/task/PID/children, else a scan of /proc/*/stat."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except FileNotFoundError:
        pass  # no CONFIG_PROC_CHILDREN, or pid gone
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat_line = f.read()
        except OSError:
            continue
        # "PID (comm) STATE PPID ...": comm may hold spaces and ")", so split after the last.
        fields = stat_line.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry))
    return found
