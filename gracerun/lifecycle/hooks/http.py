"""http: call a registry, load balancer or the service over HTTP, with retries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gracerun.clients import http as httpclient
from gracerun.config.kinds import HttpHook, HttpProbe
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut
from gracerun.observe import redact

if TYPE_CHECKING:
    import ssl

    from gracerun.core.service import Service

RECORD = HttpHook  # the config record of this kind (see KINDS in __init__.py)


def headers_of(hook: HttpHook | HttpProbe) -> dict[str, str]:
    """The configured headers, plus the bearer token read from its file now."""
    headers = dict(hook.headers)
    if hook.bearer_token_file:
        headers["Authorization"] = "Bearer " + httpclient.read_secret(hook.bearer_token_file)
    return headers


def tls_of(hook: HttpHook | HttpProbe) -> ssl.SSLContext | None:
    return httpclient.ca_context(hook.ca_file) if hook.ca_file else None


def _accepted(hook: HttpHook, status: int) -> bool:
    return status in hook.expect_status if hook.expect_status else 200 <= status < 300


async def run(hook: HttpHook, service: Service) -> str:
    """Each attempt gets the hook's timeout; the caller bounds the whole run."""
    import asyncio
    last, timed_out = "", False
    for attempt in range(hook.retries + 1):
        if attempt:
            await asyncio.sleep(hook.backoff * 2 ** (attempt - 1))
        try:
            resp = await httpclient.request(hook.method, hook.url, headers=headers_of(hook),
                                            body=hook.body, timeout=hook.timeout,
                                            ssl_context=tls_of(hook))
        except httpclient.HttpError as exc:
            last, timed_out = str(exc), isinstance(exc, httpclient.HttpTimeout)
            continue
        timed_out = False
        if _accepted(hook, resp.status):
            return f"HTTP {resp.status} after {attempt + 1} attempt(s)"
        last = (f"{hook.method} {redact.url(hook.url)}: unexpected status {resp.status} "
                f"{resp.reason}")
    error = HookTimedOut if timed_out else HookFailed
    raise error(f"{last} (after {hook.retries + 1} attempt(s))")
