"""One run, top to bottom: tini's main() plus whatever the config asks for.

    configure the process     subreaper (when not PID 1), parent-death signal
    claim the endpoint's port a plain socket, bound now: a conflict is still a
                              start-up error (exit 2) before the service runs
    a trigger already?        then the service is not started: exit 128+N
    start taking signals      the thread that takes them, before the service exists
    spawn the service         as early as possible (see below)
    choose the loop           MiniLoop, or asyncio's when something needs it
    wire the options          pipeline, metrics/endpoint/state file, control socket
    install the signal inbox  takes what was held since cli.main() began
    run the loop              until the lifecycle reaches DONE
    exit with its code

Why spawn before the loop.  Importing asyncio and prometheus-client
takes 60-130 ms, and the service used to wait for all of it: 186 ms from
gracerun's exec to the service's first instruction with a full configuration.
Everything that can refuse the run (the configuration, the endpoint's port)
is settled first; everything that only needs to be ready by the time the
service can be stopped is loaded after it runs.  Nothing is lost in between:
every signal, SIGCHLD included, has been blocked since cli.main() began
(signals.hold()), so a service that exits at once or a SIGTERM sent meanwhile
waits in the kernel until the inbox takes it, and the reaper's watch on the
service is registered before the first waitpid can run.

What a trigger before the spawn means.  A shutdown trigger (SIGTERM, ...)
pending when the service is about to be spawned means the container is being
stopped before it ran anything: the service is not started, gracerun logs one
line and exits 128+N (143 for SIGTERM), as the service would have had it
started and been stopped.  The check is the last thing before the fork: a
trigger that arrives after it is taken by the inbox like any other, and the
service, started by then, gets its stop signal.

Each optional part is imported only when configured, so a bare
`gracerun -- CMD` loads neither asyncio nor prometheus-client.
"""

from __future__ import annotations

import gc
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gracerun.config.load import Config
from gracerun.core import signals
from gracerun.core.log import WARNING, event
from gracerun.core.spawn import spawn_service
from gracerun.errors import GracerunError, UsageError

if TYPE_CHECKING:
    import _socket

    from gracerun.core.supervisor import Supervisor


def run(cfg: Config, argv: Sequence[str]) -> int:
    """Run `argv` under gracerun with `cfg` to the end; return gracerun's exit code."""
    configure_process(cfg)
    listener = _claim_endpoint(cfg.server.listen) if cfg.server.listen is not None else None
    early = pending_trigger(cfg.shutdown.triggers)
    if early is not None:
        event(WARNING, "stop signal before the service started: not starting it",
              signal=signals.name(early), exit_code=128 + early)
        return 128 + early
    signals.start_taking()  # before the spawn: a task limit fails the spawn, not this
    pid = spawn_service(argv)
    # cli.main() turned the cyclic GC off for the path to the spawn; from here on
    # it runs as usual (left off through the imports below, it would let their
    # garbage fragment ~0.2 MB more of the heap for good).
    gc.enable()

    # The rest of the core is imported after the spawn: nothing above needs it.
    from gracerun.core.loop import new_loop
    from gracerun.core.reaper import Reaper
    from gracerun.core.supervisor import Supervisor

    loop = new_loop(cfg.needs_asyncio, cfg.process.event_loop)
    if cfg.needs_asyncio:
        import asyncio

        asyncio.set_event_loop(loop)
    sup = Supervisor(loop, cfg, Reaper(warn_on_orphans=cfg.log.warn_orphans))
    sup.adopt(pid, argv)  # the reaper's watch, before anything can reap
    try:
        # Wiring first: the endpoint's start runs the loop (run_until_complete), and a
        # SIGTERM taken then would run the whole shutdown before the wiring's finish
        # callbacks exist, leaving run_forever() below with nothing to stop it.
        # Until the inbox is installed the signals wait, taken in order by the thread
        # start_taking() began before the spawn, and are dispatched once it is.
        _wire(sup, listener)
        signals.SignalInbox(loop, sup.on_signal).install()
    except GracerunError:
        _abandon(pid)
        raise
    sup.begin()
    loop.run_forever()
    assert sup.lifecycle.exit_code is not None
    return sup.lifecycle.exit_code


def configure_process(cfg: Config) -> None:
    """Subreaper when not PID 1 (or asked), parent-death signal when asked."""
    from gracerun.core import linux

    if os.getpid() != 1 or cfg.process.subreaper:
        try:
            linux.become_subreaper()
        except (OSError, AttributeError) as exc:
            event(WARNING, "cannot become a child subreaper; orphans of the service "
                  "will not be reaped by gracerun", error=str(exc))
    if cfg.process.pdeathsig:
        linux.set_parent_death_signal(cfg.process.pdeathsig)


def pending_trigger(triggers: frozenset[int] | set[int] | Sequence[int]) -> int | None:
    """The lowest shutdown trigger waiting in the kernel (held since cli.main()), or None."""
    pending = signal.sigpending()
    found = [s for s in triggers if s in pending]
    return min(found) if found else None


def _abandon(pid: int) -> None:
    """A start-up error after the spawn (an explicitly configured control socket
    that cannot be opened): the service must not outlive gracerun's exit 2."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except OSError:
        pass


def _claim_endpoint(listen: str) -> _socket.socket:
    """Bind and listen on server.listen with the C `_socket` module, before the
    spawn and without asyncio; the endpoint serves on it once the loop exists.
    (`socket` itself, with selectors and its enums, costs about 3 ms before the
    spawn; `_wire` makes a `socket.socket` of it afterwards.)

    ":PORT" (every address) is one dual-stack IPv6 socket where the machine has
    IPv6, else 0.0.0.0.  Raises UsageError naming the address and the reason.
    """
    import _socket

    host, _, port_text = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    try:
        if host:
            # An ASCII name as bytes: a str goes through the idna codec (encodings.idna,
            # stringprep, unicodedata: ~1.5 ms before the spawn) even for "127.0.0.1".
            name: str | bytes = host.encode("ascii") if host.isascii() else host
            family, kind, proto, _, address = _socket.getaddrinfo(
                name, port, type=_socket.SOCK_STREAM, flags=_socket.AI_PASSIVE)[0]
            sock = _socket.socket(family, kind, proto)
        else:
            try:
                family, address = _socket.AF_INET6, ("::", port)
                sock = _socket.socket(family, _socket.SOCK_STREAM)
            except OSError:  # no IPv6 here
                family, address = _socket.AF_INET, ("", port)
                sock = _socket.socket(family, _socket.SOCK_STREAM)
    except OSError as exc:
        raise UsageError(f"server.listen: cannot listen on {listen}: {_reason(exc)}") from None
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if family == _socket.AF_INET6 and not host:
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(100)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise UsageError(f"server.listen: cannot listen on {listen}: {_reason(exc)}") from None
    return sock


def _reason(exc: OSError) -> str:
    # A name that does not resolve has a negative errno and its own text.
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return exc.strerror or str(exc)


def _wire(sup: Supervisor, listener: Any = None) -> None:
    """Attach what the configuration asks for, once the service runs."""
    cfg = sup.cfg
    problem = cfg.budget_problem()
    if problem:
        event(WARNING, problem)
    from gracerun import observe

    # metrics, endpoint (on the socket bound before the spawn), state file:
    # imports only what is configured
    if listener is not None:
        import socket

        listener = socket.socket(fileno=listener.detach())
    observe.setup(sup, listener)
    if cfg.has_pipeline:
        from gracerun.lifecycle.shutdown import Pipeline

        sup.prestop = Pipeline(sup)
    if cfg.has_startup and cfg.startup is not None:
        from gracerun.lifecycle.startup import Startup

        restore = cfg.plan.deregister.hooks if cfg.plan is not None and cfg.startup.restore \
            else ()
        sup.startup = Startup(sup, cfg.startup, restore)
    path = cfg.control.path(pid1=os.getpid() == 1)
    if path is None:
        return
    from gracerun.lifecycle import control

    try:
        control.ControlServer(sup, path).open()
    except UsageError as exc:
        if cfg.control.socket:  # asked for explicitly: a start-up error
            raise
        # The implicit PID-1 default must never keep the service from starting.
        event(WARNING, "no control socket for 'gracerun prestop'", error=str(exc))
