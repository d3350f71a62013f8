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
from typing import TYPE_CHECKING

from gracerun.clients import kubernetes as k8s
from gracerun.config import strings
from gracerun.config.kinds import Probe, opt
from gracerun.lifecycle.probes import ProbeError

if TYPE_CHECKING:
    from gracerun.core.service import Service


class KubernetesProbe(Probe):
    """This pod's endpoint in the EndpointSlices of `service`."""

    service: str = opt(expand=strings.text, expect="the Kubernetes Service's name",
                       help="the Service whose EndpointSlices route to this pod")
    namespace: str | None = opt(None, expand=strings.text, shown="the service account's",
                                help="the pod's namespace")
    pod_name: str | None = opt(None, expand=strings.text, shown="$POD_NAME, else $HOSTNAME",
                               help="this pod's name (the endpoint's targetRef)")
    pod_ip: str | None = opt(None, expand=strings.text, shown="$POD_IP",
                             help="this pod's IP, for endpoints without a targetRef")
    api: str | None = opt(None, expand=strings.url,
                          shown="https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
                          help="the API server")
    token_file: str = opt(k8s.TOKEN_FILE, expand=strings.text,
                          help='the bearer token, read again at every request (`""`: none)')
    ca_file: str = opt(k8s.CA_FILE, expand=strings.text,
                       help='the API server\'s CA (`""`: the system\'s store)')

RECORD = KubernetesProbe  # the config record of this kind (lifecycle/probes/__init__.py: KINDS)

async def propagated(probe: KubernetesProbe, service: Service) -> bool:
    """True once this pod's endpoint is no longer ready (or not listed at all)."""
    try:
        namespace = probe.namespace or k8s.read_small_file(k8s.NAMESPACE_FILE, "namespace")
        state = await k8s.endpoint_state(
            probe.api or k8s.default_api(), namespace, probe.service,
            pod_name=probe.pod_name or os.environ.get("POD_NAME") or os.environ.get("HOSTNAME"),
            pod_ip=probe.pod_ip or os.environ.get("POD_IP"),
            token_file=probe.token_file or None, tls=k8s.ssl_context(probe.ca_file),
            timeout=probe.timeout)
    except k8s.KubernetesError as exc:
        raise ProbeError(str(exc)) from None
    return not state.ready
