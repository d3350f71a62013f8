"""The http hook and probe over TLS with a private CA and a bearer token read from a file.

What the kubernetes integration needs from the generic kinds: request headers, a bearer
token re-read at every request (projected service-account tokens rotate), and a CA file.
The server is a local HTTPS server whose certificate a CA made by the test signs.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gracerun.config.kinds import HttpHook, HttpProbe
from gracerun.core.reaper import Reaper
from gracerun.core.service import Service
from gracerun.lifecycle.hooks import HookFailed
from gracerun.lifecycle.hooks import http as http_hook
from gracerun.lifecycle.probes import http as http_probe
from tests.contracts.kubernetes import make_tls

pytestmark = pytest.mark.timeout(60)


class TlsServer:
    def __init__(self, directory: Path) -> None:
        self.ca, cert, key = make_tls(directory)
        self.seen: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                ok = self.headers.get("Authorization") == "Bearer good-token"
                body = json.dumps({"inflight": 0}).encode() if ok else b"no"
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    server = TlsServer(tmp_path_factory.mktemp("tls"))
    yield server
    server.close()


def run_hook(hook: HttpHook) -> str:
    async def go() -> str:
        return await http_hook.run(hook, Service(Reaper(), asyncio.get_running_loop()))

    return asyncio.run(go())


def test_hook_sends_the_token_from_its_file_and_trusts_the_ca(tls: TlsServer,
                                                             tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("good-token\n")
    hook = HttpHook(name="reg", timeout=3.0, method="PUT", url=tls.url + "/deregister",
                    headers={"X-Extra": "1"}, bearer_token_file=str(token),
                    ca_file=str(tls.ca))
    assert run_hook(hook).startswith("HTTP 200")
    assert tls.seen[-1]["authorization"] == "Bearer good-token"
    assert tls.seen[-1]["x-extra"] == "1"
    token.write_text("rotated-bad")  # read again at the next request
    with pytest.raises(HookFailed, match="unexpected status 401"):
        run_hook(hook)
    assert tls.seen[-1]["authorization"] == "Bearer rotated-bad"


def test_hook_failures_never_show_the_token(tls: TlsServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-value")
    bad_ca = HttpHook(name="reg", timeout=3.0, url=tls.url + "/x",
                      bearer_token_file=str(token))  # the system store: not our CA
    with pytest.raises(HookFailed) as failed:
        run_hook(bad_ca)
    assert "certificate verify failed" in str(failed.value)
    assert "s3cret" not in str(failed.value)
    missing = HttpHook(name="reg", timeout=3.0, url=tls.url + "/x",
                       bearer_token_file=str(tmp_path / "nope"), ca_file=str(tls.ca))
    with pytest.raises(HookFailed, match="cannot read the token"):
        run_hook(missing)


def test_probe_reads_with_headers_token_and_ca(tls: TlsServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("good-token")
    probe = HttpProbe(url=tls.url + "/inflight", field="inflight", headers={"X-P": "y"},
                      bearer_token_file=str(token), ca_file=str(tls.ca), timeout=3.0)

    async def go() -> tuple[float, bool]:
        return await http_probe.read(probe), await http_probe.ready(probe)

    assert asyncio.run(go()) == (0.0, True)
    assert tls.seen[-1]["x-p"] == "y"
