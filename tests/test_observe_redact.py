"""Redaction and escaping: observe/redact.py, and the places untrusted text enters.

Secrets in URLs (userinfo, query) must not reach a log line, the state file or a
report; bytes from peers (HTTP reason phrases, HAProxy answers, hook output) must
not reach a terminal as control characters.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gracerun.clients import haproxy
from gracerun.clients.http import HttpError, request
from gracerun.core import log
from gracerun.observe import redact

pytestmark = pytest.mark.timeout(30)

SECRET = "s3cr3t-T0KEN"
CONTROL = "".join(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x202E, 0x2028]))


@pytest.mark.parametrize(("url", "shown"), [
    ("http://reg:8848/nacos/v1/ns/instance?token=x&ip=1", "http://reg:8848/nacos/v1/ns/instance?[redacted]"),
    ("http://user:pw@reg/p", "http://[redacted]@reg/p"),
    ("https://u@[::1]:8443/a/b?c#frag", "https://[redacted]@[::1]:8443/a/b?[redacted]#[redacted]"),
    ("http://h/p#only-fragment", "http://h/p#[redacted]"),
    ("http://h?x=1", "http://h?[redacted]"),
    ("http://h/plain/path", "http://h/plain/path"),
    ("http://h/p?", "http://h/p?"),
    ("http://h/\x1b[2J", "http://h/\\x1b[2J"),
    ("reg:80/x?token=1", "reg:80/x?[redacted]"),
])  # fmt: skip
def test_url(url: str, shown: str) -> None:
    assert redact.url(url) == shown


def test_scrub_is_idempotent() -> None:
    """The state file is scrubbed when written and again when read."""
    for text in ("GET http://u:p@h/x?t=1#f: failed [http://h/y?z]", "a\x1b[1mb"):
        once = redact.scrub(text)
        assert redact.scrub(once) == once


def test_scrub_finds_urls_in_free_text() -> None:
    text = (f"DELETE http://a:{SECRET}@reg/x?token={SECRET}: timed out; "
            f"retrying 'https://reg/y?k={SECRET}' (see http://reg/z)")
    out = redact.scrub(text)
    assert SECRET not in out
    assert out == ("DELETE http://[redacted]@reg/x?[redacted]: timed out; retrying "
                   "'https://reg/y?[redacted]' (see http://reg/z)")


def test_text_escapes_every_control_character() -> None:
    out = redact.text("a" + CONTROL + "b")
    assert out.startswith("a\\x00\\x01") and out.endswith("\\u202e\\u2028b")
    assert out.isprintable()
    assert redact.text("é ü 漢字 ok") == "é ü 漢字 ok"  # printable text is left alone
    assert redact.text("x" * 50, limit=10) == "x" * 10 + "..."


@given(st.text())
def test_scrub_output_is_one_printable_line(value: str) -> None:
    out = redact.scrub(value)
    assert all(c.isprintable() or c == " " for c in out)
    assert "\n" not in out and "\x1b" not in out and "\r" not in out


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_query_never_survives(query: str) -> None:
    secret = "Q" + query.replace("#", "")
    out = redact.scrub(f"GET http://reg/path?{secret} failed")
    assert secret not in out or secret in "GET http://reg/path?[redacted] failed"


def test_redaction_is_cheap_to_import() -> None:
    """Core modules may import it: it must not pull in re, urllib or asyncio (typing is
    loaded by gracerun's core anyway)."""
    import subprocess
    import sys
    code = ("import sys; before = set(sys.modules); import gracerun.observe.redact; "
            "print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30)
    loaded = set(out.stdout.strip()[1:-1].replace("'", "").split(", "))
    assert {"gracerun", "gracerun.observe", "gracerun.observe.redact"} <= loaded
    assert loaded <= {"gracerun", "gracerun.observe", "gracerun.observe.redact", "typing",
                      "typing.io", "typing.re", "_typing", "collections.abc"}, loaded


# ------------------------------------------------------------- the http client


def _one_shot(response: bytes) -> tuple[str, threading.Thread, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(response)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", thread, listener


def test_http_errors_redact_query_and_userinfo() -> None:
    """Steps: a request to a refused port with a token in the query, one with an
    unresolvable host and one malformed answer: no message carries the token,
    and each keeps the path."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    messages = []
    for url in (f"http://127.0.0.1:{port}/deregister?token={SECRET}",
                f"http://user:{SECRET}@127.0.0.1:{port}/x"):
        with pytest.raises(HttpError) as info:
            asyncio.run(request("DELETE", url, timeout=5))
        messages.append(str(info.value))
    base, thread, listener = _one_shot(b"HTTP/1.1 2000 nope\r\n\r\n")
    with listener, pytest.raises(HttpError) as info:
        asyncio.run(request("GET", f"{base}/a?token={SECRET}", timeout=5))
    thread.join(5)
    messages.append(str(info.value))
    assert all(SECRET not in m for m in messages), messages
    assert messages[0] == (f"DELETE http://127.0.0.1:{port}/deregister?[redacted]: "
                           f"connection refused")
    assert "/a?[redacted]: malformed response" in messages[2]


def test_http_reason_phrase_is_escaped() -> None:
    base, thread, listener = _one_shot(
        b"HTTP/1.1 503 \x1b]0;pwned\x07\x1b[2J Busy\x9b\r\nContent-Length: 0\r\n\r\n")
    with listener:
        resp = asyncio.run(request("GET", base + "/", timeout=5))
    thread.join(5)
    assert resp.status == 503
    assert "\x1b" not in resp.reason and "\x07" not in resp.reason
    assert resp.reason == "\\x1b]0;pwned\\x07\\x1b[2J Busy\\x9b"


def test_http_hook_failure_shows_no_token() -> None:
    """The http hook's own "unexpected status" message (lifecycle/hooks/http.py)."""
    from gracerun.config.kinds import HttpHook
    from gracerun.lifecycle.hooks import HookFailed
    from gracerun.lifecycle.hooks import http as http_hook

    base, thread, listener = _one_shot(b"HTTP/1.1 500 \x1b[31mOops\r\nContent-Length: 0\r\n\r\n")
    hook = HttpHook(name="reg", url=f"{base}/dereg?token={SECRET}", timeout=5.0)
    with listener, pytest.raises(HookFailed) as info:
        asyncio.run(http_hook.run(hook, None))  # type: ignore[arg-type]
    thread.join(5)
    assert SECRET not in str(info.value) and "\x1b" not in str(info.value)
    assert "/dereg?[redacted]: unexpected status 500 \\x1b[31mOops" in str(info.value)


# ------------------------------------------------------------------- HAProxy


def test_haproxy_error_answers_are_escaped(tmp_path: Any) -> None:
    """An error answer from the Runtime API carries escapes: the error line shows them
    as text."""
    path = str(tmp_path / "admin.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"Unknown command \x1b]52;c;ZXZpbA==\x07\x1b[8m hidden\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with listener, pytest.raises(haproxy.HaproxyError) as info:
        asyncio.run(haproxy.command(path, "show info", 5))
    thread.join(5)
    message = str(info.value)
    assert "\x1b" not in message and "\x07" not in message
    assert "Unknown command \\x1b]52;c;ZXZpbA==\\x07\\x1b[8m hidden" in message


# --------------------------------------------------------------- hook output


def test_exec_hook_output_is_escaped_and_redacted() -> None:
    """The exec hook's output reaches the log line by line: escapes shown as text,
    URLs redacted."""
    from gracerun.lifecycle.hooks.exec import _pump_output

    r, w = os.pipe()
    os.write(w, b"\x1b[2J\x1b]0;title\x07cleared\r\n"
                b"calling http://reg/x?token=" + SECRET.encode() + b"\n")
    os.close(w)
    with log.capture(log.INFO) as logged:
        asyncio.run(_pump_output(r, "h"))
    lines = [rec.fields["line"] for rec in logged if rec.message() == "hook output"]
    assert lines == ["\\x1b[2J\\x1b]0;title\\x07cleared", "calling http://reg/x?[redacted]"]


def test_haproxy_status_is_escaped(tmp_path: Any) -> None:
    """`show stat`'s status column ends up in the hook's detail: escaped."""
    path = str(tmp_path / "admin.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"# pxname,svname,qcur,scur,stot,status\n"
                         b"app,web1,0,2,9,UP\x1b[8m hidden\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with listener:
        stats = asyncio.run(haproxy.server_stats(path, "app", "web1", 5))
    thread.join(5)
    assert stats.status == "UP\\x1b[8m hidden"


def test_text_log_lines_escape_control_characters_in_fields_and_messages() -> None:
    """Fields carry text from outside gracerun (exception messages, hook output, server
    answers): an escape sequence or a newline in one must not reach the terminal raw."""
    record = log.Record(log.WARNING, "hook failed\x1b]0;owned\x07", (),
                        {"detail": "boom\x1b[31m\nsecond line", "count": 3})
    line = log.format_text(record)
    assert "\x1b" not in line and "\n" not in line and "\x07" not in line
    assert "\\x1b[31m" in line and "\\x0a" in line and "count=3" in line
