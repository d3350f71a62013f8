"""The Kubernetes API, read-only: this pod's endpoint in its Service's EndpointSlices.

    GET {api}/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices
        ?labelSelector=kubernetes.io/service-name={service}
    Authorization: Bearer <service account token, re-read at each request>

From inside a pod the API server is `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
the token and the CA are the service account's, mounted at their standard paths.
The token is read from its file at every request because the kubelet rotates
projected tokens (about every hour); it is sent only in the header, never logged.

What "this pod's endpoint is ready" means follows the EndpointSlice API
(discovery.k8s.io/v1, EndpointConditions): an endpoint matches this pod by its
targetRef (kind Pod, name) or, without a pod name, by its address; `ready`
missing (nil) is to be read as ready; a terminating pod's endpoint stays in the
slice with `ready: false` (and `terminating: true`), which is what kube-proxy
and most ingress controllers act on.  No matching endpoint at all counts as
not ready: the pod is out of every slice.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import TYPE_CHECKING, Any

from gracerun.clients import http as httpclient
from gracerun.core.tuples import NamedTuple
from gracerun.errors import GracerunError

if TYPE_CHECKING:
    import ssl

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_FILE = f"{SA_DIR}/token"
CA_FILE = f"{SA_DIR}/ca.crt"
NAMESPACE_FILE = f"{SA_DIR}/namespace"
_MAX_BODY = 8 * 1024 * 1024  # a list of slices of a very large Service


class KubernetesError(GracerunError):
    """The API server could not be asked, or its answer could not be read."""


class EndpointState(NamedTuple):
    found: bool  # this pod has an endpoint in one of the Service's slices
    ready: bool  # ...and it is ready (kube-proxy sends it new connections)
    terminating: bool


def default_api(environ: dict[str, str] | None = None) -> str:
    """The in-cluster API URL from the environment the kubelet sets."""
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"https://{host}:{port}"


def read_small_file(path: str, what: str) -> str:
    """A token or namespace file (clients/http.py's read_secret); KubernetesError if bad."""
    try:
        return httpclient.read_secret(path, what)
    except httpclient.HttpError as exc:
        raise KubernetesError(str(exc)) from None


def ssl_context(ca_file: str | None) -> ssl.SSLContext | None:
    """Trust `ca_file`, or the system's store (None) when there is none."""
    if not ca_file:
        return None
    try:
        return httpclient.ca_context(ca_file)
    except httpclient.HttpError as exc:
        raise KubernetesError(str(exc)) from None


async def endpoint_state(api: str, namespace: str, service: str, *, pod_name: str | None,
                         pod_ip: str | None, token_file: str | None,
                         tls: ssl.SSLContext | None, timeout: float) -> EndpointState:
    """Where this pod stands in `service`'s EndpointSlices."""
    selector = urllib.parse.quote(f"kubernetes.io/service-name={service}", safe="=")
    url = (f"{api.rstrip('/')}/apis/discovery.k8s.io/v1/namespaces/"
           f"{urllib.parse.quote(namespace, safe='')}/endpointslices?labelSelector={selector}")
    headers = {"Accept": "application/json"}
    if token_file:
        headers["Authorization"] = "Bearer " + read_small_file(token_file, "service account token")
    try:
        resp = await httpclient.request("GET", url, headers=headers, timeout=timeout,
                                        max_body=_MAX_BODY, ssl_context=tls)
    except httpclient.HttpError as exc:
        raise KubernetesError(str(exc)) from None
    if resp.status != 200:
        reason = {401: "unauthorized (token rejected)", 403: "forbidden (the service "
                  "account may not list endpointslices: grant get/list on "
                  "discovery.k8s.io endpointslices)", 404: "not found"}.get(resp.status, "")
        raise KubernetesError(f"GET endpointslices of {namespace}/{service}: HTTP "
                              f"{resp.status}{' ' + reason if reason else ''}")
    try:
        data = json.loads(resp.body)
    except ValueError:
        raise KubernetesError(f"GET endpointslices of {namespace}/{service}: "
                              "the answer is not JSON") from None
    return find_endpoint(data, pod_name=pod_name, pod_ip=pod_ip)


def find_endpoint(data: Any, *, pod_name: str | None, pod_ip: str | None) -> EndpointState:
    """This pod's endpoint in an EndpointSliceList; KubernetesError for a wrong shape."""
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise KubernetesError("the answer is not an EndpointSliceList")
    for item in data["items"]:
        endpoints = item.get("endpoints") if isinstance(item, dict) else None
        for ep in endpoints if isinstance(endpoints, list) else ():
            if isinstance(ep, dict) and _is_this_pod(ep, pod_name, pod_ip):
                cond = ep.get("conditions")
                cond = cond if isinstance(cond, dict) else {}
                ready = cond.get("ready")
                return EndpointState(found=True, ready=ready is None or ready is True,
                                     terminating=cond.get("terminating") is True)
    return EndpointState(found=False, ready=False, terminating=False)


def _is_this_pod(ep: dict[str, Any], pod_name: str | None, pod_ip: str | None) -> bool:
    ref = ep.get("targetRef")
    if pod_name and isinstance(ref, dict) and ref.get("kind", "Pod") == "Pod":
        return bool(ref.get("name") == pod_name)
    addresses = ep.get("addresses")
    return bool(pod_ip) and isinstance(addresses, list) and pod_ip in addresses
