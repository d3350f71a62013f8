"""kubernetes: has the cluster taken this pod out of its Service's endpoints?

A propagate probe.  After the trigger, the endpoints controller marks a
terminating pod's endpoint not ready in the Service's EndpointSlices, and
kube-proxy and the ingress controllers watching them stop sending it new
connections.  Propagate ends once this pod's endpoint reads not ready (or is
gone), and not before the phase's `min`, which stays the time for what sits
behind the slices and does not show in them (an ingress's own reload, client
caches).  A failed read counts as "not yet", as every probe's does.

    [shutdown.propagate]
    probe = { type = "kubernetes", service = "web" }
    min = "5s"
    max = "30s"
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gracerun.clients import kubernetes as k8s
from gracerun.config.plan import Probe
from gracerun.core.service import Service
from gracerun.lifecycle.probes import ProbeError

if TYPE_CHECKING:
    import ssl


@dataclass(frozen=True, kw_only=True)
class KubernetesProbe(Probe):
    """This pod's endpoint in the EndpointSlices of `service`."""

    service: str  # the Kubernetes Service whose endpoints route to this pod
    namespace: str | None = None  # default: the service account's namespace file
    pod_name: str | None = None  # default: $POD_NAME, else $HOSTNAME (a pod's name)
    pod_ip: str | None = None  # default: $POD_IP; matches when the endpoint has no targetRef
    api: str | None = None  # default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT
    token_file: str | None = k8s.TOKEN_FILE  # re-read at every request ("" for none)
    ca_file: str | None = k8s.CA_FILE  # the API server's CA ("" for the system store)


async def propagated(probe: KubernetesProbe, service: Service) -> bool:
    """True once this pod's endpoint is no longer ready (or not listed at all)."""
    try:
        namespace = probe.namespace or k8s.read_small_file(k8s.NAMESPACE_FILE, "namespace")
        state = await k8s.endpoint_state(
            probe.api or k8s.default_api(), namespace, probe.service,
            pod_name=probe.pod_name or os.environ.get("POD_NAME") or os.environ.get("HOSTNAME"),
            pod_ip=probe.pod_ip or os.environ.get("POD_IP"),
            token_file=probe.token_file or None, tls=_tls(probe.ca_file or None),
            timeout=probe.timeout)
    except k8s.KubernetesError as exc:
        raise ProbeError(str(exc)) from None
    return not state.ready


_contexts: dict[str | None, ssl.SSLContext] = {}


def _tls(ca_file: str | None) -> ssl.SSLContext:
    """One TLS context per CA file for the run (loading a CA store costs milliseconds)."""
    ctx = _contexts.get(ca_file)
    if ctx is None:
        ctx = _contexts[ca_file] = k8s.ssl_context(ca_file)
    return ctx
