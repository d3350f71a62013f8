"""What gracerun may print or store: URLs without their secrets, text without escapes.

Hook and probe URLs carry credentials (`?token=${REG_TOKEN}`, `user:pw@`), and
the answers of registries, load balancers and hook commands are bytes nobody
vetted.  Everything that reaches a log line, the state file or a report goes
through one of these:

    url(u)      scheme, host, port and path kept; userinfo, query and
                fragment become "[redacted]"; then escaped as text()
    text(s)     every character that is not printable (C0 and C1 controls,
                ESC among them, DEL, bidi overrides and other format
                characters, line and paragraph separators, unassigned and
                surrogate code points; the space stays) becomes \\xNN,
                \\uNNNN or \\UNNNNNNNN, so a terminal shows it instead of
                obeying it
    scrub(s)    free text (an error message, a hook's detail): every URL in it
                as url(), the rest as text()

Why redact the whole query and not only known names (token, key, ...): the
names are the registry's choice, and the path is what a person reading the
log needs to tell one hook from another.  Cheap to import (no re until
scrub() is first called): core and client modules may use it.
"""

from __future__ import annotations

from typing import Any

REDACTED = "[redacted]"

_url_pattern: Any = None


def _escape(c: str) -> str:
    """One character as itself when printable, else as a Python-style escape."""
    if c.isprintable() or c == " ":
        return c
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _escaped(s: str) -> str:
    if s.isprintable():  # the usual case, decided in C
        return s
    return "".join(map(_escape, s))


def text(value: object, limit: int | None = None) -> str:
    """str(value) safe to show on one line of a terminal, cut to `limit` characters."""
    s = value if isinstance(value, str) else str(value)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "..."
    return _escaped(s)


def url(value: str) -> str:
    """The URL without userinfo, query or fragment (each replaced by [redacted]).

    "http://u:pw@reg:8848/nacos/v1/ns/instance?token=x#f" becomes
    "http://[redacted]@reg:8848/nacos/v1/ns/instance?[redacted]#[redacted]".
    Text that is not "scheme://..." keeps only what comes before a "?" or "#".
    """
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    netloc_end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    if sep and "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    path_end = min((i for i in map(tail.find, "?#") if i >= 0), default=len(tail))
    path, extra = tail[:path_end], tail[path_end:]
    if extra.startswith("?"):
        query, _, fragment = extra[1:].partition("#")
        has_fragment = "#" in extra
    else:
        query, fragment, has_fragment = "", extra[1:], bool(extra)
    out = f"{scheme}{sep}{netloc}{path}"
    if extra.startswith("?"):
        out += f"?{REDACTED}" if query else "?"
    if has_fragment:
        out += f"#{REDACTED}" if fragment else "#"
    return text(out)


def scrub(value: object, limit: int | None = None) -> str:
    """Free text made safe: every "scheme://..." in it redacted as url(), the rest escaped."""
    global _url_pattern
    s = value if isinstance(value, str) else str(value)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "..."
    if "://" not in s:
        return _escaped(s)
    if _url_pattern is None:
        import re

        # A URL ends where whitespace, a quote or an angle bracket does (as in
        # "GET http://h/x?t=1: timed out" or repr()'s 'http://h/x?t=1').
        _url_pattern = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")
    parts: list[str] = []
    last = 0
    for m in _url_pattern.finditer(s):
        parts.append(_escaped(s[last:m.start()]))
        found = m.group()
        trailing = ""
        # "GET http://h/x?t=1: timed out": sentence punctuation is not the URL's
        while found and found[-1] in ".,;:)}":
            trailing = found[-1] + trailing
            found = found[:-1]
        parts.append(url(found) + _escaped(trailing))
        last = m.end()
    parts.append(_escaped(s[last:]))
    return "".join(parts)
