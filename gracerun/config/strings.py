"""Parsers of string values: text, paths, commands, tables, header fields, URLs,
hosts and listen addresses, HAProxy names.

Those that expand ${VAR} are factories taking the environment (`text(env)` is the
parser), so that build() can validate against an environment it is given.  Like
values.py: raw value in, typed value out or ValueError saying what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gracerun.config.values import Env, Parser, brief, describe, expand_env

_HOOK_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


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


def path(env: Env) -> Parser:
    expand = text(env)

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a file path, got {describe(value)}")
        return expand(value)

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


def hook_name(value: Any) -> str:
    if not isinstance(value, str) or not _HOOK_NAME.fullmatch(value):
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


def listen_address(value: Any) -> str:
    """"127.0.0.1:9102", "[::1]:9102", ":9102" (every address)."""
    expected = 'expected "HOST:PORT" such as "127.0.0.1:9102", got'
    if not isinstance(value, str):
        raise ValueError(f"{expected} {describe(value)}")
    _host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5 \
            or not 0 < int(port) < 65536:
        raise ValueError(f"{expected} {brief(value)}")
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
