"""Wiring: from the configuration, create what observability needs, and nothing else.

    server.listen                metrics registry + the HTTP endpoint
    state.textfile, pushgateway  metrics registry, written / pushed at the end
    state.file                   JSON record at the end; read back at start when
                                 there is a registry to expose it on

A plain run (none of these set) imports nothing here beyond this module:
prometheus_client, asyncio and json load only when something configured
needs them, so gracerun's start-up time does not change.

End-of-shutdown order (sup.on_finish): state file first (local, the record
`gracerun report` reads), then the textfile, then the Pushgateway (network,
bounded by the budget left), then the endpoint closes, last.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gracerun.core.supervisor import Supervisor
    from gracerun.core.timeline import Timeline


def setup(sup: Supervisor, listener: Any = None) -> None:
    """Create the configured metrics, endpoint and state handling for this run.

    `listener`: server.listen's socket, already bound and listening (app.py
    binds it before the spawn); None: bind it here.

    Raises UsageError when server.listen cannot be bound (before the service starts).
    """
    cfg = sup.cfg
    wants_metrics = (cfg.server.listen is not None or cfg.state.textfile is not None
                     or cfg.state.pushgateway is not None)
    if not wants_metrics and cfg.state.file is None:
        return
    registry = _registry(sup) if wants_metrics else None

    server = None
    if cfg.server.listen is not None:
        from gracerun.observe.server import Server

        assert registry is not None
        server = Server(sup, registry)
        server.start(cfg.server.listen, listener)
    sup.on_finish.append(lambda _timeline: _finish(sup, registry))
    if server is not None:
        close = server.close
        sup.on_finish.append(lambda _timeline: close())


def _registry(sup: Supervisor) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry

    from gracerun.observe import metrics
    registry = CollectorRegistry()
    metrics.Metrics(registry, sup.lifecycle, sup.cfg.plan, sup.service).attach(sup)
    if sup.cfg.state.file is not None:
        from gracerun.observe import state
        previous = state.read_previous(sup.cfg.state.file)
        if previous is not None:
            registry.register(metrics.LastShutdownCollector(previous))
    return registry


def _finish(sup: Supervisor, registry: CollectorRegistry | None) -> None:
    """Leave the record of this shutdown where it outlives the process."""
    from gracerun.observe import state
    cfg = sup.cfg.state
    timeline: Timeline = sup.timeline
    if cfg.file is not None:
        state.save(cfg.file, timeline, sup.service.exit_code)
    if registry is None:
        return
    if cfg.textfile is not None:
        state.write_textfile(cfg.textfile, registry)
    if cfg.pushgateway is not None:
        state.push(cfg.pushgateway, registry, timeline.remaining())
