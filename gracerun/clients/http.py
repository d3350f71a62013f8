"""A small HTTP/1.1 client on asyncio, for hooks and probes.

gracerun calls load balancers, registries and the service itself while it shuts down, so
the client must be bounded in time, cancellable, and fail with one readable line. It does
one request per connection (``Connection: close``): no pooling, no redirects, no
decompression, no cookies. That keeps every request independent, which is what a shutdown
sequence wants, and keeps this module short enough to read.

URLs in messages are redacted (observe/redact.py: no userinfo, query or fragment), and the
reason phrase of a response is escaped, since both end up in logs and the state file.

Nothing slow is imported at the top (asyncio only when a request is made, urllib.parse
only for the URLs _split() leaves to it): the config's validation imports this module
(parse_url) before the service is spawned, and gracerun's start-up time is the
service's start-up time.
``ssl`` is imported, and the default context (which loads the CA store) built, on the first
https request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping  # already loaded by the interpreter itself
from typing import TYPE_CHECKING

from gracerun.errors import GracerunError
from gracerun.observe import redact

if TYPE_CHECKING:
    import asyncio
    import ssl

MAX_BODY = 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_LINES = 100

_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 token characters, for methods and header names.
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")
# Printable ASCII stays as written; anything else in the path is percent-encoded as UTF-8.
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))
# Methods whose requests carry content, so they get "Content-Length: 0" when empty;
# some servers (nginx among them) answer 411 otherwise.
_METHODS_WITH_CONTENT = frozenset({"POST", "PUT", "PATCH"})
# Headers this client owns: it always closes the connection and frames the body itself.
_MANAGED_HEADERS = frozenset({"connection", "content-length", "transfer-encoding"})

_default_ssl_context: ssl.SSLContext | None = None


class HttpError(GracerunError):
    """An HTTP request failed: bad URL, connection error, timeout or malformed response.

    The message is one line naming the method and URL (redacted). ``reason`` is the same
    without that "METHOD URL: " prefix ("connection refused", "timed out after 2s"), for
    callers that name the request their own way. A response with any status code, 4xx and
    5xx included, is not an error: it is returned.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason


class HttpTimeout(HttpError):
    """The request did not complete within its timeout."""


def _failed(kind: type[HttpError], where: str, reason: str) -> HttpError:
    return kind(f"{where}: {reason}", reason)


class Response:
    """A frozen record, as a frozen dataclass would be, without importing dataclasses
    (this module is imported before the service is spawned)."""

    __slots__ = ("body", "headers", "reason", "status")
    status: int
    reason: str
    headers: dict[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes

    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes) -> None:
        for name, value in (("status", status), ("reason", reason), ("headers", headers),
                            ("body", body)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        import dataclasses  # its error, for callers that expect a frozen dataclass

        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # headers is a dict, as the dataclass's was

    def __repr__(self) -> str:
        return (f"Response(status={self.status!r}, reason={self.reason!r}, "
                f"headers={self.headers!r}, body={self.body!r})")


def parse_url(url: str) -> tuple[str, str, int, str]:
    """Split an http(s) URL into ``(scheme, host, port, path_with_query)``.

    ``host`` has no brackets (``::1`` for ``http://[::1]/``) and is ASCII (IDNA-encoded);
    ``port`` defaults to 80 or 443; the path defaults to ``/`` and the fragment is dropped.
    Raises HttpError for anything a request could not be sent to, so configuration can be
    validated before it is needed.
    """
    if not isinstance(url, str):
        raise HttpError(f"bad URL {url!r}: not a string")
    if any(c <= " " or c == "\x7f" for c in url):
        raise HttpError(f"bad URL '{_redact(url)}': contains whitespace or control characters")
    try:
        scheme, userinfo, host, port, path, query = _split(url)
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
        raise HttpError(f"bad URL '{_redact(url)}': {exc}") from None
    if scheme not in _DEFAULT_PORTS:
        raise HttpError(f"bad URL '{_redact(url)}': scheme must be http or https")
    if userinfo:
        raise HttpError(
            f"bad URL '{_redact(url)}': credentials in URLs are not supported,"
            " use an Authorization header"
        )
    if not host:
        raise HttpError(f"bad URL '{_redact(url)}': no host")
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    elif port == 0:
        raise HttpError(f"bad URL '{_redact(url)}': port 0")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise HttpError(f"bad URL '{_redact(url)}': bad host name: {exc}") from None
    target = _quote(path or "/")
    if query:
        target += "?" + _quote(query)
    return scheme, host, port, target


# urllib.parse's scheme_chars.
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


def _split(url: str) -> tuple[str, bool, str | None, int | None, str, str]:
    """(scheme, has userinfo, hostname, port, path, query) exactly as
    ``urllib.parse.urlsplit(url)`` and its ``username``/``password``, ``hostname`` and
    ``port`` give them, raising ValueError where they do.  `url` has no whitespace or
    control characters (parse_url refused those).

    Why not always urlsplit: importing urllib.parse, with the ipaddress module it
    imports, costs ~3 ms, and the configuration's validation calls parse_url before
    the service is spawned.  So an ASCII URL without brackets, what configurations
    hold, is split here by urlsplit's own rules (CPython 3.11's urllib/parse.py:
    urlsplit, _splitnetloc, _hostinfo, hostname, port); anything else, IPv6 literals
    and non-ASCII names with their NFKC check, goes to urlsplit itself.
    tests/test_httpclient.py holds the two to the same answers on generated URLs.
    """
    if not url.isascii() or "[" in url or "]" in url:
        import urllib.parse

        parts = urllib.parse.urlsplit(url)
        port = parts.port
        userinfo = parts.username is not None or parts.password is not None
        return parts.scheme, userinfo, parts.hostname, port, parts.path, parts.query
    scheme = ""
    colon = url.find(":")
    if colon > 0 and url[0].isalpha() and all(c in _SCHEME_CHARS for c in url[:colon]):
        scheme, url = url[:colon].lower(), url[colon + 1:]
    netloc = ""
    if url[:2] == "//":
        ends = [i for i in (url.find(c, 2) for c in "/?#") if i >= 0]
        end = min(ends, default=len(url))
        netloc, url = url[2:end], url[end:]
    url = url.split("#", 1)[0]
    path, _, query = url.partition("?")
    _, at, hostinfo = netloc.rpartition("@")
    host, _, port_text = hostinfo.partition(":")
    port = None
    if port_text:
        if not port_text.isdigit():
            raise ValueError(f"Port could not be cast to integer value as {port_text!r}")
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError("Port out of range 0-65535")
    name, percent, zone = host.partition("%")  # a zone keeps its case, as in urlsplit
    return scheme, bool(at), (name.lower() + percent + zone) or None, port, path, query


def _quote(text: str) -> str:
    """Printable ASCII as written; anything else percent-encoded as UTF-8."""
    if text.isascii() and text.isprintable() and " " not in text:
        return text  # what urllib.parse.quote(text, safe=_PRINTABLE_ASCII) returns for it
    import urllib.parse

    return urllib.parse.quote(text, safe=_PRINTABLE_ASCII)


async def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float,
    max_body: int = MAX_BODY,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """Send one request and return the response, whatever its status code.

    Everything (name resolution, connecting, TLS, sending, reading) shares one ``timeout``
    in seconds: one deadline for the whole request, not one per read, so neither a
    resolver that never answers nor a peer that trickles its answer byte by byte can
    stretch it. The connection is closed on every path out, cancellation included.
    ``headers`` may override ``Host``, ``User-Agent`` and ``Accept``; ``Connection``,
    ``Content-Length`` and ``Transfer-Encoding`` are set by the client and passed values
    are ignored. A response body larger than ``max_body`` bytes is an error. https uses
    ``ssl_context``, or ``ssl.create_default_context()`` when None.

    Raises HttpError for every expected failure; CancelledError passes through.
    """
    scheme, host, port, target = parse_url(url)
    if not method or not set(method) <= _TCHARS:
        raise HttpError(f"{_redact(url)}: bad method {method!r}")
    where = f"{method} {_redact(url)}"
    head = _request_head(method, scheme, host, port, target, headers, body, where)
    payload = head + (body or b"")
    tls = None
    if scheme == "https":
        tls = ssl_context or _ssl_default_context()
    import asyncio  # here, not at the top: config validation imports this module (parse_url)

    writer: asyncio.StreamWriter | None = None
    done = False
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=tls,
                server_hostname=host if tls else None,
                limit=MAX_HEADER_BYTES,
            )
            writer.write(payload)
            await writer.drain()
            response = await _read_response(reader, method, max_body)
        done = True
        return response
    except TimeoutError:
        raise _failed(HttpTimeout, where, f"timed out after {timeout:g}s") from None
    except _ProtocolError as exc:
        raise _failed(HttpError, where, f"malformed response: {exc}") from None
    except ConnectionRefusedError:
        raise _failed(HttpError, where, "connection refused") from None
    except (ConnectionResetError, BrokenPipeError):
        raise _failed(HttpError, where, "connection reset by peer") from None
    except OSError as exc:  # resolution (gaierror), unreachable, TLS (ssl.SSLError) ...
        raise _failed(HttpError, where, f"connection failed: {exc.strerror or exc}") from None
    finally:
        if writer is not None:
            if done:
                writer.close()
            else:
                # Failed or cancelled: drop the connection now rather than wait for a
                # TLS close_notify exchange with a peer that may not answer.
                writer.transport.abort()


class _ProtocolError(Exception):
    """The peer broke HTTP/1.1 framing; becomes HttpError with the URL attached."""


def _request_head(
    method: str,
    scheme: str,
    host: str,
    port: int,
    target: str,
    headers: Mapping[str, str] | None,
    body: bytes | None,
    where: str,
) -> bytes:
    host_header = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[scheme]:
        host_header += f":{port}"
    fields = {"host": ("Host", host_header), "user-agent": ("User-Agent", "gracerun")}
    fields["accept"] = ("Accept", "*/*")
    for name, value in (headers or {}).items():
        if not name or not set(name) <= _TCHARS:
            raise _failed(HttpError, where, f"bad header name {name!r}")
        if any(c in value for c in "\r\n\0"):
            raise _failed(HttpError, where, f"bad value for header {name!r}")
        if name.lower() not in _MANAGED_HEADERS:
            fields[name.lower()] = (name, value)
    if body is not None or method in _METHODS_WITH_CONTENT:
        fields["content-length"] = ("Content-Length", str(len(body or b"")))
    fields["connection"] = ("Connection", "close")
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in fields.values()]
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise _failed(HttpError, where, "header values must be latin-1") from None


async def _read_response(reader: asyncio.StreamReader, method: str, max_body: int) -> Response:
    """Read one response from ``reader``; raises _ProtocolError on broken framing."""
    while True:
        status_line = await _readline(reader)
        if not status_line:
            raise _ProtocolError("connection closed before the status line")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise _ProtocolError(f"bad status line {status_line[:80]!r}")
        status = int(code)
        headers = await _read_headers(reader)
        # 1xx are interim (100 Continue, 103 Early Hints): the real answer follows.
        # 101 is final, but we never ask to switch protocols.
        if status >= 200 or status == 101:
            break
    if method == "HEAD" or status < 200 or status in (204, 304):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader, max_body)
    elif "transfer-encoding" not in headers and "content-length" in headers:
        body = await _read_sized(reader, headers["content-length"], max_body)
    else:
        body = await _read_to_eof(reader, max_body)
    # The reason phrase is the peer's free text, bound for log lines: escaped.
    return Response(status, redact.text(reason.strip(), 100), headers, body)


async def _readline(reader: asyncio.StreamReader) -> str:
    """One line without its line ending ("" at EOF); bare LF is accepted like CRLF."""
    try:
        line = await reader.readline()
    except ValueError:  # longer than the reader's limit
        raise _ProtocolError("line too long") from None
    if line and not line.endswith(b"\n"):
        raise _ProtocolError("connection closed in the middle of a line")
    return line.rstrip(b"\r\n").decode("latin-1")


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    size = 0
    for _ in range(MAX_HEADER_LINES):
        line = await _readline(reader)
        if not line:
            return headers
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise _ProtocolError(f"headers over {MAX_HEADER_BYTES} bytes")
        name, colon, value = line.partition(":")
        if not colon or not name or not set(name) <= _TCHARS:
            raise _ProtocolError(f"bad header line {line[:80]!r}")
        name, value = name.lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    raise _ProtocolError(f"more than {MAX_HEADER_LINES} header lines")


async def _read_sized(reader: asyncio.StreamReader, field: str, max_body: int) -> bytes:
    values = {v.strip() for v in field.split(",")}
    if len(values) != 1 or not (value := values.pop()).isdigit():
        raise _ProtocolError(f"bad Content-Length {field[:40]!r}")
    length = int(value)
    if length > max_body:
        raise _ProtocolError(f"body of {length} bytes is over the {max_body} byte limit")
    try:
        return await reader.readexactly(length)
    except EOFError as exc:  # asyncio.IncompleteReadError
        raise _ProtocolError(
            f"connection closed after {len(getattr(exc, 'partial', b''))} of {length} "
            f"body bytes"
        ) from None


async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    body = bytearray()
    while True:
        line = await _readline(reader)
        if not line:
            raise _ProtocolError("connection closed in the middle of a chunked body")
        size_field = line.partition(";")[0].strip()  # drop chunk extensions
        if not size_field or not set(size_field) <= _HEXDIGITS:
            raise _ProtocolError(f"bad chunk size line {line[:40]!r}")
        size = int(size_field, 16)
        if size == 0:
            break
        if len(body) + size > max_body:
            raise _ProtocolError(f"body over the {max_body} byte limit")
        try:
            body += await reader.readexactly(size)
        except EOFError:  # asyncio.IncompleteReadError
            raise _ProtocolError("connection closed in the middle of a chunk") from None
        if await _readline(reader) != "":
            raise _ProtocolError("chunk not followed by CRLF")
    await _read_headers(reader)  # trailer fields, discarded
    return bytes(body)


async def _read_to_eof(reader: asyncio.StreamReader, max_body: int) -> bytes:
    body = bytearray()
    while chunk := await reader.read(64 * 1024):
        body += chunk
        if len(body) > max_body:
            raise _ProtocolError(f"body over the {max_body} byte limit")
    return bytes(body)


_ca_contexts: dict[str, ssl.SSLContext] = {}
_MAX_SECRET = 64 * 1024


def ca_context(ca_file: str) -> ssl.SSLContext:
    """A TLS context that trusts `ca_file` (one per file for the run: loading costs ms)."""
    import ssl

    ctx = _ca_contexts.get(ca_file)
    if ctx is None:
        try:
            ctx = _ca_contexts[ca_file] = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise HttpError(f"cannot load the CA file {ca_file}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
    return ctx


def read_secret(path: str, what: str = "token") -> str:
    """A bearer token's file, read at each request (tokens rotate): a regular file of at
    most 64 KiB, stripped.  HttpError when it cannot be read; the content is never shown."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise HttpError(f"cannot read the {what} at {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HttpError(f"the {what} at {path} is not a regular file")
        data = os.read(fd, _MAX_SECRET + 1)
    finally:
        os.close(fd)
    text = data.decode("utf-8", "replace").strip()
    if len(data) > _MAX_SECRET or not text or any(c in text for c in "\r\n\0"):
        raise HttpError(f"the {what} at {path} is empty, too large or not one line")
    return text


def display_url(url: str) -> str:
    """scheme://host:port/path, for naming a server in a message: no credentials, query
    or fragment, no trailing slash."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "<bad URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path.rstrip('/')}"


def _ssl_default_context() -> ssl.SSLContext:
    global _default_ssl_context
    if _default_ssl_context is None:
        import ssl

        _default_ssl_context = ssl.create_default_context()
    return _default_ssl_context


def _redact(url: str) -> str:
    """The URL fit for messages and logs: no userinfo, query or fragment (observe/redact.py)."""
    return redact.url(url)
