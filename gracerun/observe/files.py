"""Files gracerun writes or reads for others, reached only through hands it trusts.

gracerun often runs as root, and writes where a configuration says: the state
file, the textfile, the control socket's directory.  A path is only as safe
as everyone who can change it on the way, so:

    open_dir(path)    walk from "/" one component at a time (openat with
                      O_NOFOLLOW), and accept a directory or symlink on the
                      way only if it belongs to gracerun's user or root; a
                      symlink is not followed where others could have swapped
                      it (a directory they can write to, without the sticky
                      bit).  Anything else is UnsafePathError.
    write_atomic()    a new temporary file (O_CREAT|O_EXCL|O_NOFOLLOW, mode
                      0600) in that directory, written, fsynced, given its
                      final mode and renamed over the target, which must be a
                      regular file or absent: never a device (/dev/null), a
                      FIFO, a directory or a symlink.
    read_regular()    O_NONBLOCK, a regular file, at most `limit` bytes; when
                      `trusted`, also reached by open_dir(), not through a
                      symlink (O_NOFOLLOW) and owned by gracerun's user or root.

Why a directory others can write to (a Kubernetes emptyDir is mode 0777) is
still accepted for writing: nothing here follows or opens an existing name
for writing.  The temporary file is new (O_EXCL), and rename() replaces a
directory entry without following it, so the worst anyone with write access
to the directory can do is what that access allows anyway: delete or replace
the result.  What gracerun reads back from such a place is checked (owner,
type, size, and in state.py every field), so a planted file is ignored.
"""

from __future__ import annotations

import errno
import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_SYMLINKS = 40  # as the kernel's own path walk


class UnsafePathError(OSError):
    """The path leads through, or ends at, something gracerun must not trust."""


def trusted_uids() -> frozenset[int]:
    return frozenset((0, os.geteuid()))


def owner_problem(st: os.stat_result) -> str | None:
    """Why st's owner is not gracerun's user or root, or None."""
    if st.st_uid in trusted_uids():
        return None
    return f"owned by uid {st.st_uid}, not by uid {os.geteuid()} or root"


def others_can_write(st: os.stat_result) -> bool:
    """Group or others may create, rename and delete entries (and no sticky bit stops them)."""
    return bool(st.st_mode & 0o022) and not st.st_mode & stat.S_ISVTX


def open_dir(path: str, *, create: bool = False, mode: int = 0o700) -> int:
    """A file descriptor of directory `path` (O_RDONLY|O_DIRECTORY), safely reached.

    Relative paths start at the current directory's absolute path.  With
    `create`, missing directories are made with `mode` (less the umask).
    Raises UnsafePathError naming the path and the offending component, or the
    OSError of the failed call (FileNotFoundError, PermissionError, ...).
    The caller closes the descriptor.
    """
    todo = [p for p in reversed(os.path.abspath(path).split("/")) if p]
    fd = os.open("/", _DIR_FLAGS)
    here = os.fstat(fd)
    walked = ""
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == ".":
                continue
            try:
                new = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create or name == "..":
                    raise
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass  # someone made it meanwhile: it is checked like any other below
                new = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                where = f"{walked}/{name}"
                if not stat.S_ISLNK(st.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, f"{where} is not a directory"
                                             ) from None
                problem = owner_problem(st)
                if problem:
                    raise UnsafePathError(errno.EPERM, f"{where} is a symlink {problem}"
                                          ) from None
                if others_can_write(here):
                    raise UnsafePathError(errno.EPERM, f"{where} is a symlink in a "
                                          f"directory others can write to") from None
                links += 1
                if links > _MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, f"{path}: too many levels of symlinks") from None
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = -1
                    fd = os.open("/", _DIR_FLAGS)
                    here = os.fstat(fd)
                    walked = ""
                todo.extend(p for p in reversed(target.split("/")) if p)
                continue
            st = os.fstat(new)
            problem = owner_problem(st)
            if problem:
                os.close(new)
                raise UnsafePathError(errno.EPERM, f"{walked}/{name} is {problem}")
            os.close(fd)
            fd, here = new, st
            walked = os.path.dirname(walked) if name == ".." else f"{walked}/{name}"
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def write_atomic(path: str, content: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `content` at once (readers see the old or the new file, whole).

    The directory is reached by open_dir() (created 0700 when missing) and the
    file ends with `mode`.  Raises UnsafePathError when the target exists and
    is not a regular file, or the directory cannot be trusted; OSError otherwise.
    """
    parent, name = os.path.split(os.path.abspath(path))
    if not name:
        raise IsADirectoryError(errno.EISDIR, f"{path}: is a directory")
    dir_fd = open_dir(parent, create=True)
    try:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePathError(errno.EPERM, f"{path} exists and is {_kind(st)}, "
                                      f"not a regular file; not replacing it")
        tmp = f".{name[:200]}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            os.fsync(fd)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash of the node
        except OSError:
            pass
    finally:
        os.close(dir_fd)


def read_regular(path: str, limit: int, *, trusted: bool = False) -> bytes:
    """The content of regular file `path`, at most `limit` bytes; never blocks on a FIFO.

    With `trusted` (gracerun reading what it will act on, e.g. at start-up as
    root), the directory is reached by open_dir(), a symlink at the last
    component is not followed, and the file must belong to gracerun's user or
    root: a file planted by someone else is not read.  Without it (a person
    naming a file for `gracerun report`), the path is theirs to choose.
    Raises UnsafePathError, ValueError when the file is larger than `limit`,
    or the OSError of the failed call.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    dir_fd = None
    try:
        if trusted:
            parent, name = os.path.split(os.path.abspath(path))
            dir_fd = open_dir(parent)
            fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=dir_fd)
        else:
            fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(errno.ELOOP, f"{path} is a symlink; not following it"
                                  ) from None
        raise
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(errno.EPERM, f"{path} is {_kind(st)}, not a regular file")
        problem = owner_problem(st) if trusted else None
        if problem:
            raise UnsafePathError(errno.EPERM, f"{path} is {problem}")
        if st.st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        chunks = []
        size = 0
        while chunk := os.read(fd, limit + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ValueError(f"larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"
