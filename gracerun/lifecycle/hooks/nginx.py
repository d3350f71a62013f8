"""nginx: mark this server `down` in an upstream include file and reload nginx; undo at start-up.

    run()      `server HOST:PORT ...;` -> `server HOST:PORT ... down;`, reload, verify
    restore()  `server HOST:PORT ... down;` -> `server HOST:PORT ...;`, reload, verify

The reload is SIGHUP to the master named by `pid_file`, or `reload_command` (for example
`nginx -s reload`, which also checks the configuration first and exits 1 if it is
invalid).  Either way the hook then reads the master's children in /proc until a new
worker generation runs and no old worker takes new connections: that is nginx saying it
loaded the new configuration.  nginx rejects an invalid configuration by logging it and
keeping the old workers, so "no new workers within the timeout" fails the hook (with the
edit left in the file: the next good reload applies it).

`down` is the only form: open-source nginx has no run-time API and no heartbeat that could
undo an edit, and `down` (rather than removing the line) keeps the server's place, so
`hash` and `ip_hash` upstreams keep mapping every other client to the same server.

Needs: gracerun in nginx's PID namespace (same container, or shareProcessNamespace) and
allowed to signal it and to write the upstream file's directory.  Everything here is a
small local file or /proc read, done inline; only the reload command and the polling wait.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gracerun.clients import nginx
from gracerun.config import strings
from gracerun.config.kinds import Hook, opt
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut

if TYPE_CHECKING:
    from gracerun.core.service import Service

_POLL = 0.01  # nginx starts new workers within milliseconds of the SIGHUP
_MAX_OUTPUT = 4096  # of the reload command's output, kept for the error message


class NginxHook(Hook):
    """This server's `down` flag in an nginx upstream include file, then a reload."""

    # Path of the include file holding the upstream's `server` lines (the deploy owns it;
    # gracerun rewrites it in place by rename, keeping owner and mode; no symlinks).
    upstream_file: str = opt(expand=strings.path,
                             expect="the path of the upstream's include file",
                             help="the include file holding the upstream's `server` lines "
                                  "(rewritten in place by rename, owner and mode kept; no "
                                  "symlinks)")
    server: str = opt(expand=strings.text,
                      expect='this instance as its server line writes it, e.g. "10.0.0.5:8080"',
                      help="this instance's address exactly as its `server` line writes it")
    pid_file: str = opt("/run/nginx.pid", expand=strings.path,
                        help="the nginx master's pid file (its `pid` directive)")
    reload_command: tuple[str, ...] = opt((), expand=strings.argv, shown="SIGHUP to the master",
                                          help='a command that reloads nginx, e.g. `["nginx", '
                                               '"-s", "reload"]`; it must reload, not restart')



RECORD = NginxHook  # the config record of this kind (lifecycle/hooks/__init__.py: KINDS)

def validate(hook: NginxHook) -> list[str]:
    """Problems with the hook's fields, one "key: ..., expected ..." line each ([] if none)."""
    problems = []
    if not hook.upstream_file:
        problems.append("upstream_file: empty, expected the path of the upstream's include "
                        "file")
    if not hook.server or any(c in hook.server for c in " \t\n;{}#"):
        problems.append(f'server: expected the address as the `server` line writes it, such '
                        f'as "10.0.0.5:8080", got {hook.server!r}')
    if not hook.pid_file:
        problems.append('pid_file: empty, expected the path of nginx\'s pid file such as '
                        '"/run/nginx.pid"')
    if hook.reload_command and not hook.reload_command[0]:
        problems.append("reload_command: expected a command and its arguments such as "
                        '["nginx", "-s", "reload"]')
    return problems


async def run(hook: NginxHook, service: Service) -> str:
    """Mark the server down, reload, and verify a new worker generation."""
    return await _switch(hook, service, down=True)


async def restore(hook: NginxHook, service: Service) -> str:
    """Remove the server's `down`, reload, and verify a new worker generation."""
    return await _switch(hook, service, down=False)


async def _switch(hook: NginxHook, service: Service, *, down: bool) -> str:
    import asyncio

    problems = validate(hook)
    if problems:
        raise HookFailed(f"nginx hook {hook.name}: {problems[0]}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + hook.timeout
    try:
        # The pid file first: with no master to reload, the file is better left alone.
        master = nginx.master_pid(hook.pid_file)
        edit = nginx.set_down(hook.upstream_file, hook.server, down)
        # After the edit, so that workers of a reload someone else started before it
        # count as old.  Hooks that reload the same nginx should still run one at a time.
        before = nginx.workers(master)
        if hook.reload_command:
            await _reload_command(hook, service, deadline - loop.time())
        else:
            nginx.reload(master)
        while not nginx.took(before, after := nginx.workers(master)):
            if not nginx.alive(master):
                raise HookFailed(f"nginx: master {master} exited during the reload")
            if loop.time() >= deadline:
                raise HookFailed(
                    f"nginx: no new worker processes {hook.timeout:g}s after the reload: "
                    f"nginx rejected the configuration or is stuck (see its error_log); "
                    f"{hook.upstream_file} has {hook.server} {'down' if down else 'up'}")
            await asyncio.sleep(_POLL)
    except nginx.NginxError as exc:
        raise HookFailed(str(exc)) from None
    state = "down" if down else "up"
    was = f"{state}" if edit.changed else f"already {state}"
    new = sorted(pid for pid in after if pid not in before and nginx.is_worker(after[pid]))
    return (f"{hook.server} {was} in {hook.upstream_file}; reloaded master {master}: "
            f"{len(new)} new workers")


async def _reload_command(hook: NginxHook, service: Service, timeout: float) -> None:
    """Run reload_command through the one reaper; its output goes in the error message."""
    import asyncio
    import os
    import tempfile

    from gracerun.core.spawn import Child, Redirect
    from gracerun.errors import LaunchError

    command = hook.reload_command
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    with tempfile.TemporaryFile() as output:
        try:
            child = Child.start(command, service.reaper, asyncio.get_running_loop(),
                                redirect=Redirect(stdin=devnull, stdout=output.fileno(),
                                                  stderr=output.fileno()))
        except LaunchError as exc:
            raise HookFailed(f"nginx: reload_command: {exc}") from None
        finally:
            os.close(devnull)
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                code = await child.wait()  # kills the command's group if cancelled
        except TimeoutError:
            raise HookTimedOut(f"nginx: reload_command {command[0]} still running after "
                               f"{hook.timeout:g}s") from None
        if code != 0:
            output.seek(max(0, os.fstat(output.fileno()).st_size - _MAX_OUTPUT))
            lines = output.read(_MAX_OUTPUT).decode("utf-8", "replace").strip().splitlines()
            said = f": {lines[-1][:200]}" if lines else ""
            raise HookFailed(f"nginx: reload_command {command[0]} exited {code}{said}")
