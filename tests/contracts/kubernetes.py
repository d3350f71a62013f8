"""A fake Kubernetes API server: EndpointSlices, as the real one serves them.

Held to Kubernetes 1.29's discovery.k8s.io/v1 API (staging/src/k8s.io/api/
discovery/v1/types.go: EndpointSlice, Endpoint, EndpointConditions) and the
apiserver's list semantics:

- GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices
  ?labelSelector=kubernetes.io/service-name={svc}  ->  200, an EndpointSliceList
  (kind, apiVersion, metadata.resourceVersion, items) holding only the slices
  whose label matches; an unknown namespace or service gives an empty list,
  not a 404 (a list with a selector never 404s).
- Authentication: `Authorization: Bearer <token>`; a missing or wrong token is
  401 with a v1 Status body (reason "Unauthorized"); a known token without the
  RBAC right to list endpointslices is 403 (reason "Forbidden").
- HTTPS only, with a certificate for 127.0.0.1 signed by a CA the test makes.

The test plays the endpoints controller: `terminate(pod)` flips that pod's
endpoint to ready=false, serving=true, terminating=true after `delay`, as the
EndpointSlice controller does once the pod has a deletionTimestamp.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    ca_key, ca = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca), "-days", "2", "-subj", "/CN=fake-kubernetes-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


class FakeKubernetes:
    def __init__(self, tls_dir: Path, *, token: str = "sa-token",
                 forbidden_tokens: tuple[str, ...] = ()) -> None:
        self.ca, cert, key = make_tls(tls_dir)
        self.token = token
        self.forbidden = set(forbidden_tokens)
        self.slices: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (ns, svc) -> items
        self.requests: list[tuple[float, str, str]] = []  # (time, path, auth header)
        self.garbage = False  # answer 200 with a body that is not JSON
        self.status: int | None = None  # answer this status instead (500, ...)
        self._lock = threading.Lock()
        self._version = 1
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        self._timers: list[threading.Timer] = []

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------ the world

    def add_endpoint(self, namespace: str, service: str, pod: str, ip: str, *,
                     with_target_ref: bool = True) -> None:
        endpoint: dict[str, Any] = {
            "addresses": [ip],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": "node-1",
        }
        if with_target_ref:
            endpoint["targetRef"] = {"kind": "Pod", "namespace": namespace, "name": pod,
                                     "uid": f"uid-{pod}"}
        with self._lock:
            items = self.slices.setdefault((namespace, service), [])
            if not items:
                items.append({
                    "metadata": {"name": f"{service}-abcde", "namespace": namespace,
                                 "labels": {"kubernetes.io/service-name": service,
                                            "endpointslice.kubernetes.io/managed-by":
                                                "endpointslice-controller.k8s.io"},
                                 "resourceVersion": str(self._version)},
                    "addressType": "IPv4",
                    "endpoints": [],
                    "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
                })
            items[0]["endpoints"].append(endpoint)
            self._version += 1

    def terminate(self, namespace: str, service: str, pod: str, delay: float = 0.0) -> None:
        """The pod got its deletionTimestamp: after `delay`, its endpoint is not ready."""

        def flip() -> None:
            with self._lock:
                for item in self.slices.get((namespace, service), []):
                    for ep in item["endpoints"]:
                        if ep.get("targetRef", {}).get("name") == pod:
                            ep["conditions"] = {"ready": False, "serving": True,
                                                "terminating": True}
                self._version += 1

        if delay <= 0:
            flip()
            return
        timer = threading.Timer(delay, flip)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def list_body(self, namespace: str, service: str | None) -> bytes:
        with self._lock:
            items = [item for (ns, svc), slices in self.slices.items()
                     for item in slices if ns == namespace and (service is None or svc == service)]
            body = {"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                    "metadata": {"resourceVersion": str(self._version)},
                    "items": json.loads(json.dumps(items))}
        return json.dumps(body).encode()


def _status(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": message, "reason": reason,
                       "code": code}).encode()


def _handler(api: FakeKubernetes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            auth = self.headers.get("Authorization", "")
            api.requests.append((time.monotonic(), parts.path, auth))
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
            if token is None or (token != api.token and token not in api.forbidden):
                self._send(401, _status(401, "Unauthorized", "Unauthorized"))
                return
            segments = parts.path.strip("/").split("/")
            # apis / discovery.k8s.io / v1 / namespaces / NS / endpointslices
            if len(segments) != 6 or segments[:4] != ["apis", "discovery.k8s.io", "v1",
                                                      "namespaces"] \
                    or segments[5] != "endpointslices":
                self._send(404, _status(404, "NotFound", "the server could not find the "
                                                         "requested resource"))
                return
            namespace = segments[4]
            if token in api.forbidden:
                self._send(403, _status(403, "Forbidden", 'endpointslices.discovery.k8s.io '
                                        'is forbidden: User "system:serviceaccount:'
                                        f'{namespace}:default" cannot list resource'))
                return
            if api.status is not None:
                self._send(api.status, _status(api.status, "InternalError", "boom"))
                return
            if api.garbage:
                self._send(200, b"<html>not json</html>")
                return
            query = urllib.parse.parse_qs(parts.query)
            service = None
            for selector in query.get("labelSelector", []):
                key, _, value = selector.partition("=")
                if key == "kubernetes.io/service-name":
                    service = value
            self._send(200, api.list_body(namespace, service))

    return Handler
