"""Parsers of string values: text, paths, commands, tables, header fields, URLs,
hosts and listen addresses, HAProxy names.

Those that expand ${VAR} are factories taking the environment (`text(env)` is the
parser), so that build() can validate against an environment it is given.  Like
values.py: raw value in, typed value out or ValueError saying what was expected.
A string that would fail when used (a NUL in an argument, a header that cannot be
sent) fails here, at start-up, not in the middle of a shutdown.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gracerun.config.values import Env, Parser, brief, describe, expand_env

_HOOK_NAME = r"[A-Za-z0-9_.:-]{1,64}"
# RFC 9110 token characters: what a header name may be made of.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"


def text(env: Env) -> Parser:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {describe(value)}")
        expanded = expand_env(value, env)
        try:
            expanded.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("expected text that is valid UTF-8") from None
        return expanded

    return parse


def _no_nul(what: str, value: str) -> str:
    if "\0" in value:
        raise ValueError(f"expected {what} without NUL characters, got {brief(value)}")
    return value


def path(env: Env) -> Parser:
    """A file path: the kernel takes no NUL in one, so one is refused here, not at use."""
    expand = text(env)

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a file path, got {describe(value)}")
        return _no_nul("a file path", expand(value))

    return parse


def body(env: Env) -> Parser:
    expand = text(env)
    return lambda value: expand(value).encode()  # text() has checked it is valid UTF-8


def argv(env: Env) -> Parser:
    """A command as an array of strings, the program first (there is no shell)."""
    expand = text(env)

    def parse(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            raise ValueError(f'expected an array of strings like ["curl", "-sf", URL], '
                             f"got a string {brief(value)}")
        if not isinstance(value, list) or not value:
            raise ValueError(f"expected a non-empty array of strings, got {describe(value)}")
        if not all(isinstance(v, str) for v in value):
            bad = next(v for v in value if not isinstance(v, str))
            raise ValueError(f"expected an array of strings, found {describe(bad)}")
        if not value[0]:
            raise ValueError("expected a command name as the first element, got an empty string")
        return tuple(_no_nul("command arguments", expand(v)) for v in value)

    return parse


def text_list(env: Env) -> Parser:
    """An array of strings (tags), each ${VAR}-expanded; a tuple."""
    expand = text(env)

    def parse(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected an array of strings, got {describe(value)}")
        return tuple(expand(v) for v in value)

    return parse


def string_table(env: Env) -> Parser:
    expand = text(env)

    def parse(value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table of strings, got {describe(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(v, str):
                raise ValueError(f"expected a string for {brief(k)}, got {describe(v)}")
            out[k] = expand(v)
        return out

    return parse


def environment(env: Env) -> Parser:
    """Variables for a command: names that execve can pass on, values without NUL."""
    table = string_table(env)

    def parse(value: Any) -> dict[str, str]:
        out = table(value)
        for k, v in out.items():
            if not k or "=" in k or "\0" in k:
                raise ValueError(f"expected environment variable names without '=' or NUL, "
                                 f"got {brief(k)}")
            _no_nul(f"a value for {brief(k)}", v)
        return out

    return parse


def headers(env: Env) -> Parser:
    """HTTP header fields as the client will send them: token names, one-line latin-1
    values, so a bad header fails now, not in the middle of a shutdown."""
    table = string_table(env)

    def parse(value: Any) -> dict[str, str]:
        out = table(value)
        for k, v in out.items():
            if not re.fullmatch(_TOKEN, k):
                raise ValueError(f"expected header names of letters, digits and !#$%&'*+-.^_`|~ "
                                 f"(no spaces), got {brief(k)}")
            if any(c in v for c in "\r\n\0"):
                raise ValueError(f"expected a one-line value for header {k!r} (no CR, LF or "
                                 "NUL)")
            try:
                v.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError(f"expected a latin-1 value for header {k!r} (HTTP/1.1 sends "
                                 f"header bytes as they are), got {brief(v)}") from None
        return out

    return parse


def hook_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(_HOOK_NAME, value):
        raise ValueError("expected a name of 1-64 letters, digits, '_', '-', '.', ':', "
                         f"got {describe(value)}")
    return value


def url(env: Env) -> Parser:
    """An http(s) URL the client can call, checked now rather than mid-shutdown."""
    expand = text(env)

    def parse(value: Any) -> str:
        from gracerun.clients.http import HttpError, parse_url

        expanded = expand(value)
        try:
            parse_url(expanded)
        except HttpError as exc:
            why = str(exc).rpartition("': ")[2]
            raise ValueError(f"expected an http:// or https:// URL, got {brief(expanded)} "
                             f"({why})") from None
        return expanded

    return parse


# ------------------------------------------------------- hosts and sockets


def _host_problem(host: str) -> str | None:
    """Why `host` cannot be resolved or bound, or None: an IP literal or a DNS name."""
    if any(c <= " " or c == "\x7f" for c in host):
        return "contains whitespace or control characters"
    if host.startswith("[") or ":" in host:
        import ipaddress  # only for IPv6 literals (start-up time)

        try:
            ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            return "not an IPv6 address"
        return None if host.startswith("[") == host.endswith("]") else "unbalanced brackets"
    if host.isascii():
        # The idna codec's own rule for an ASCII name (each label 1-63 characters, the
        # last one may be empty: a trailing dot), without loading it: encodings.idna
        # brings stringprep and unicodedata (~1.2 ms before the spawn, ~150 kB held).
        labels = host.split(".")
        if all(0 < len(label) < 64 for label in labels[:-1]) and len(labels[-1]) < 64:
            return None
        return "a DNS name of labels of 1-63 characters"
    try:
        host.encode("idna")  # each label 1-63 characters: what getaddrinfo will demand
    except UnicodeError:
        return "a DNS name of labels of 1-63 characters"
    return None


def host(env: Env) -> Parser:
    expand = text(env)

    def parse(value: Any) -> str:
        name = expand(value)
        problem = _host_problem(name) if name else "empty"
        if problem:
            raise ValueError(f"expected a host name or IP address, got {brief(name)} "
                             f"({problem})")
        return name

    return parse


def listen_address(value: Any) -> str:
    """"127.0.0.1:9102", "[::1]:9102", ":9102" (every address)."""
    expected = 'expected "HOST:PORT" such as "127.0.0.1:9102", got'
    if not isinstance(value, str):
        raise ValueError(f"{expected} {describe(value)}")
    host_part, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5 \
            or not 0 < int(port) < 65536:
        raise ValueError(f"{expected} {brief(value)}")
    problem = _host_problem(host_part) if host_part else None
    if problem:
        raise ValueError(f"{expected} {brief(value)} (host: {problem})")
    return value


def haproxy_name(what: str) -> Callable[[Env], Parser]:
    def factory(env: Env) -> Parser:
        expand = text(env)

        def parse(value: Any) -> str:
            from gracerun.clients.haproxy import NAME

            expanded = expand(value)
            if not NAME.match(expanded):
                raise ValueError(f"expected an HAProxy {what} name (letters, digits, '_', '-', "
                                 f"'.', ':'), got {brief(expanded)}")
            return expanded

        return parse

    return factory


def haproxy_socket(env: Env) -> Parser:
    expand = text(env)

    def parse(value: Any) -> str:
        socket_path = expand(value)
        if not socket_path or "\0" in socket_path:
            raise ValueError(f"expected the path of HAProxy's stats socket, got "
                             f"{brief(socket_path)}")
        return socket_path if "/" in socket_path else f"./{socket_path}"  # "/" marks a path

    return parse


def haproxy_address(env: Env) -> Parser:
    expand = text(env)

    def parse(value: Any) -> str:
        from gracerun.clients.haproxy import HaproxyError, parse_address

        address = expand(value)
        try:
            parse_address(address)
        except HaproxyError:
            raise ValueError('expected the "HOST:PORT" of HAProxy\'s stats socket, such as '
                             f'"127.0.0.1:9999", got {brief(address)}') from None
        return address

    return parse
