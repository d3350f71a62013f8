"""http: GET a URL; a number in the body (or a JSON field), or the status's verdict.

With value = "status" the reading is 0 when the status is ok and 1 otherwise.
As a readiness gate it passes on an ok status.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gracerun.clients import http as httpclient
from gracerun.config.kinds import HttpProbe
from gracerun.lifecycle.hooks.http import headers_of, tls_of
from gracerun.lifecycle.probes import ProbeError
from gracerun.observe import redact

if TYPE_CHECKING:
    from gracerun.core.service import Service

RECORD = HttpProbe  # the config record of this kind (see KINDS in __init__.py)

_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?")


async def in_flight(probe: HttpProbe, service: Service) -> float:
    return await read(probe)


def traffic(probe: HttpProbe) -> Callable[[], Awaitable[float]]:
    return lambda: read(probe)


async def ready(probe: HttpProbe) -> bool:
    try:
        resp = await httpclient.request("GET", probe.url, headers=headers_of(probe),
                                        timeout=probe.timeout, ssl_context=tls_of(probe))
    except (httpclient.HttpError, OSError):
        return False
    return resp.status in probe.ok_status


async def read(probe: HttpProbe) -> float:
    try:
        resp = await httpclient.request("GET", probe.url, headers=headers_of(probe),
                                        timeout=probe.timeout, ssl_context=tls_of(probe))
    except httpclient.HttpError as exc:
        raise ProbeError(str(exc)) from None
    if probe.value == "status":
        return 0.0 if resp.status in probe.ok_status else 1.0
    if resp.status not in probe.ok_status:
        raise ProbeError(f"GET {redact.url(probe.url)}: status {resp.status}")
    if probe.field:
        try:
            value = json.loads(resp.body)[probe.field]
            return float(value)
        except (ValueError, KeyError, TypeError, OverflowError):
            raise ProbeError(f"GET {redact.url(probe.url)}: no number in JSON field "
                             f"{probe.field!r}") from None
    m = _NUMBER.search(resp.body[:4096])
    if m is None:
        raise ProbeError(f"GET {redact.url(probe.url)}: expected a number in the body")
    try:
        return float(m.group())
    except OverflowError:
        raise ProbeError(f"GET {redact.url(probe.url)}: number out of range") from None
