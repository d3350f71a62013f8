"""The standalone build (scripts/build-standalone) where there is no Python at all.

Each scenario runs build/standalone/gracerun/gracerun in a mount namespace in
which every Python installation of this machine is hidden (see
`python_installations`: directories under an empty tmpfs, interpreters and
libpython files under /dev/null), as PID 1 of a new PID namespace where that
matters, with shell-script services.  What proves there is no Python: the
service finds no python3/python on PATH, gracerun's memory maps show no
Python file from outside the bundle, and (the negative control) the pip-installed
gracerun cannot even start there.

The behaviours are those of the pip install: forward, reap, budget kill, a
configuration with exec and http hooks, a drain probe, the metrics endpoint,
the control socket with `gracerun prestop`, the state file; and `check`,
`help-config`, `report` and a configuration error print exactly what the pip
install prints.

The build must exist: scripts/test builds it before pytest.  Without it these
tests fail, unless GRACERUN_STANDALONE_SKIP says why they cannot run here.
"""

from __future__ import annotations

import ast
import asyncio
import dis
import glob
import importlib.util
import json
import marshal
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import types
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import PY, REPO, Launcher, Proc, children, cmdline, status, wait_for
from pipeline_support import HookServer, free_port

pytestmark = pytest.mark.timeout(90)

BUNDLE = REPO / "build" / "standalone" / "gracerun"
EXE = BUNDLE / "gracerun"
SPEC = REPO / "scripts" / "standalone" / "gracerun.spec"
SKIP_VAR = "GRACERUN_STANDALONE_SKIP"
CALLER_LIBRARY_PATH = "/nonexistent/caller-lib"  # must reach the service unchanged


# ------------------------------------------------------------------ the build


@pytest.fixture(scope="module")
def exe() -> str:
    """The built standalone gracerun; fails (or skips, with a reason given) without one."""
    if not EXE.exists():
        reason = os.environ.get(SKIP_VAR)
        if reason:
            pytest.skip(f"no standalone build at {EXE}: {reason}")
        pytest.fail(f"no standalone build at {EXE}: run scripts/build-standalone first "
                    f"(scripts/test does), or set {SKIP_VAR}=<why> to skip these tests")
    sources = [*(REPO / "gracerun").rglob("*.py"),
               *(p for p in (REPO / "scripts" / "standalone").iterdir() if p.is_file())]
    newest = max(sources, key=lambda p: p.stat().st_mtime)
    if newest.stat().st_mtime > EXE.stat().st_mtime:
        pytest.fail(f"the standalone build is older than {newest.relative_to(REPO)}: "
                    "run scripts/build-standalone")
    return str(EXE)


# ------------------------------------------------------------ hiding Python


def python_installations() -> tuple[list[str], list[str]]:
    """(directories, files) that hold a Python interpreter or its library on this
    machine: the running interpreter's prefixes (unless they are /usr or
    /usr/local themselves), the usual system locations, pyenv, every python* on
    PATH, the libpython this test runs on, and the venvs of this repository."""
    dirs: set[str] = set()
    files: set[str] = set()
    system = {"/", "/usr", "/usr/local"}
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        real = os.path.realpath(prefix)
        if real not in system:
            dirs.add(real)
    for pattern in ("/usr/lib/python3*", "/usr/local/lib/python3*", "/usr/lib/python2*",
                    "/root/.pyenv", "/opt/python*", "/opt/conda", str(REPO / ".venv"),
                    str(REPO / "build" / "*venv*"), "/tmp/gracerun-bench-venv"):
        dirs.update(os.path.realpath(p) for p in glob.glob(pattern) if os.path.isdir(p))
    for pattern in ("/usr/lib/*/libpython*", "/usr/lib/libpython*", "/usr/local/lib/libpython*",
                    "/usr/bin/python*", "/usr/local/bin/python*"):
        files.update(os.path.realpath(p) for p in glob.glob(pattern) if os.path.isfile(p))
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        files.update(os.path.realpath(p) for p in glob.glob(os.path.join(directory, "python*"))
                     if os.path.isfile(p))
    files.add(os.path.realpath(sys.executable))
    with open("/proc/self/maps") as fh:
        files.update(line.split()[-1] for line in fh if "libpython" in line)
    bundle = str(BUNDLE)
    assert not any(bundle == d or bundle.startswith(d + "/") for d in dirs), dirs

    def inside(path: str, others: set[str]) -> bool:
        return any(path.startswith(d + "/") for d in others)

    # What lies inside a covered directory is covered with it (and could not be
    # mounted on: it no longer exists once its directory is covered).
    return (sorted(d for d in dirs if not inside(d, dirs)),
            sorted(f for f in files if not inside(f, dirs)))


def without_python(argv: Sequence[str], *, pid1: bool = False,
                   env: dict[str, str] | None = None) -> list[str]:
    """argv run where no Python can be found: a private mount namespace (with a
    PID namespace too, argv as its PID 1, when pid1) in which every Python
    installation is covered up before argv is exec'd, with `env` exported."""
    dirs, files = python_installations()
    lines = ["set -e"]
    lines += [f"mount --bind /dev/null {shlex.quote(f)}" for f in files]
    lines += [f"mount -t tmpfs -o size=64k,mode=0755 no-python {shlex.quote(d)}" for d in dirs]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    lines.append('exec "$@"')
    ns = (["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"] if pid1
          else ["unshare", "--mount"])
    return [*ns, "/bin/sh", "-c", "\n".join(lines), "without-python", *argv]


def start_pid1(launcher: Launcher, argv: Sequence[str],
               env: dict[str, str] | None = None) -> tuple[Proc, int]:
    """Start argv as PID 1 without Python; return unshare's Proc and argv's PID seen from here."""
    proc = launcher.start(without_python(argv, pid1=True, env=env))
    want = list(argv)
    pid = wait_for(lambda: [c.pid for c in children(proc.pid) if cmdline(c.pid) == want],
                   what="gracerun to be exec'd as PID 1")[0]
    assert status(pid)["NSpid"].split()[-1] == "1"
    return proc, pid


SERVICE = """\
#!/bin/sh
# A service without Python: says which python it can find, then waits for signals.
for p in python3 python python3.11; do
    if command -v "$p" >/dev/null 2>&1; then echo "found $p: $(command -v "$p")"; fi
done
sleep 1000 &
sleeper=$!
trap 'echo "got USR1"' USR1
trap 'echo "got TERM"; kill "$sleeper"; exit 0' TERM
echo ready
while kill -0 "$sleeper" 2>/dev/null; do wait "$sleeper" || true; done
"""


def write_script(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def files_mapped(pid: int) -> list[str]:
    """Every file mapped into pid."""
    paths = set()
    with open(f"/proc/{pid}/maps") as fh:
        for line in fh:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                paths.add(fields[5].rstrip("\n"))
    return sorted(paths)


def python_files_mapped(pid: int) -> list[str]:
    """Files mapped into pid that belong to a Python (libpython, extension modules)."""
    return [p for p in files_mapped(pid) if "python" in p.lower() or ".abi3." in p]


# ---------------------------------------------------------------- scenarios


def test_negative_control_the_pip_install_cannot_run_there(launcher: Launcher, exe: str,
                                                           tmp_path: Path) -> None:
    """Steps: the same hiding, with the pip-installed gracerun (this interpreter,
    -m gracerun): it cannot start (exit 126/127 or an interpreter error).  And the
    service script, run without hiding, does find python3: its check can fail."""
    rc, out, err = launcher.run(without_python([PY, "-m", "gracerun", "--version"]))
    assert rc != 0 and "gracerun 0" not in out, (rc, out, err)
    script = write_script(tmp_path, "service.sh", SERVICE)
    proc = launcher.start(["/bin/sh", script])
    proc.expect("^ready")
    assert proc.out.matching("^found python3: "), proc.out.text
    proc.send(signal.SIGTERM)
    assert proc.wait() == 0


def test_forward_as_pid1_without_python(launcher: Launcher, exe: str, tmp_path: Path) -> None:
    """Steps:
    1. the standalone gracerun runs a shell service as PID 1 of a PID namespace
       whose mount namespace hides every Python; LD_LIBRARY_PATH is set to a
       caller's value;
    2. the service finds no python3/python, and prints ready;
    3. gracerun's maps: every Python file it has mapped is inside the bundle
       (libpython among them); neither libz nor the zlib module, libdl or
       libpthread (the idle-RSS work in docs/standalone.md: no archive reader,
       a launcher that needs only libc and libpython);
    4. the service's environment: the caller's LD_LIBRARY_PATH, unchanged (not
       the bundle's), and none of PyInstaller's _PYI_* variables;
    5. SIGUSR1 to gracerun reaches the service; SIGTERM: the service exits 0,
       and so does gracerun.
    """
    script = write_script(tmp_path, "service.sh", SERVICE)
    argv = [exe, "--", "/bin/sh", script]
    proc, pid = start_pid1(launcher, argv, env={"LD_LIBRARY_PATH": CALLER_LIBRARY_PATH})
    proc.expect("^ready")
    assert not proc.out.matching("^found "), proc.out.text

    mapped = python_files_mapped(pid)
    assert any("libpython" in p for p in mapped), mapped
    outside = [p for p in mapped if not p.startswith(str(BUNDLE) + "/")]
    assert not outside, f"Python files from outside the bundle: {outside}"
    extra = [p for p in files_mapped(pid)
             if os.path.basename(p).startswith(("libz.", "zlib.", "libdl.", "libpthread."))]
    assert not extra, f"mapped at idle, though gracerun does not need them there: {extra}"

    service = wait_for(lambda: [c.pid for c in children(pid) if c.comm == "sh"],
                       what="the service")[0]
    with open(f"/proc/{service}/environ", "rb") as fh:
        environ = dict(item.decode().split("=", 1) for item in fh.read().split(b"\0") if item)
    assert environ.get("LD_LIBRARY_PATH") == CALLER_LIBRARY_PATH
    assert "LD_LIBRARY_PATH_ORIG" not in environ
    assert not [k for k in environ if k.startswith("_PYI_")], sorted(environ)

    os.kill(pid, signal.SIGUSR1)
    proc.expect("^got USR1")
    os.kill(pid, signal.SIGTERM)
    proc.expect("^got TERM")
    assert proc.wait(20) == 0
    assert "Traceback" not in proc.stderr


def test_a_callers_library_path_cannot_replace_the_bundles_libraries(
        launcher: Launcher, exe: str, tmp_path: Path) -> None:
    """The bundle's libraries are found through DT_RPATH, which the dynamic linker
    searches before LD_LIBRARY_PATH (a RUNPATH would come after it).  Steps: an
    image whose LD_LIBRARY_PATH lists the system's library directories (which
    hold a libssl, a libcrypto, a libffi and a libz of their own); gracerun with
    a config that loads asyncio, and with it ssl; every libssl, libcrypto,
    libffi and libz it maps, and libpython, is the bundle's; the service still
    gets the caller's LD_LIBRARY_PATH."""
    system = [d for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu",
                          "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
              if any(Path(d).glob("libssl.so.3*"))]
    if not system:
        pytest.skip("no system libssl.so.3 to offer as a decoy")
    config = tmp_path / "loop.toml"
    config.write_text('[shutdown.propagate]\nsleep = "0s"\n')  # asyncio, ssl
    script = write_script(tmp_path, "service.sh", SERVICE)
    caller = ":".join(system)
    argv = [exe, "--config", str(config), "--", "/bin/sh", script]
    proc, pid = start_pid1(launcher, argv, env={"LD_LIBRARY_PATH": caller})
    proc.expect("^ready")
    libraries = wait_for(lambda: [p for p in files_mapped(pid)
                                  if "libssl." in p] and files_mapped(pid),
                         what="libssl mapped (asyncio loaded)")
    ours = [p for p in libraries if os.path.basename(p).startswith(
        ("libssl.", "libcrypto.", "libffi.", "libz.", "libpython"))]
    assert ours and all(p.startswith(str(BUNDLE) + "/") for p in ours), ours
    service = wait_for(lambda: [c.pid for c in children(pid) if c.comm == "sh"],
                       what="the service")[0]
    with open(f"/proc/{service}/environ", "rb") as fh:
        environ = dict(item.decode().split("=", 1) for item in fh.read().split(b"\0") if item)
    assert environ.get("LD_LIBRARY_PATH") == caller
    os.kill(pid, signal.SIGTERM)
    assert proc.wait(20) == 0


def test_service_gets_exactly_the_callers_environment(launcher: Launcher, exe: str) -> None:
    """Steps: an empty environment but PATH (a distroless image has little more):
    PyInstaller's bootloader set LD_LIBRARY_PATH and _PYI_* for gracerun, and
    python3 would coerce the C locale (putting LC_CTYPE in the environment); the
    service's `env` must print PATH alone."""
    path = "PATH=/usr/bin:/bin"
    rc, out, err = launcher.run(without_python(["env", "-i", path, exe, "--", "env"]))
    assert rc == 0, err
    assert out.splitlines() == [path]


def test_report_in_the_c_locale_prints_what_the_pip_install_prints(
        launcher: Launcher, exe: str, tmp_path: Path) -> None:
    """Steps: a shutdown recorded in a state file (the service exits by itself);
    `gracerun report` with no locale in the environment, the standalone without
    Python and the pip install: the same UTF-8 text chart, exit 0."""
    state = tmp_path / "state.json"
    config = tmp_path / "state.toml"
    config.write_text(f'[shutdown]\nbudget = "5s"\n[state]\nfile = "{state}"\n')
    rc, _, err = launcher.run(without_python([exe, "--config", str(config), "--", "true"]))
    assert rc == 0 and state.exists(), err
    bare_env = ["env", "-i", "PATH=/usr/bin:/bin"]
    pip = launcher.run([*bare_env, f"PYTHONPATH={REPO}", PY, "-m", "gracerun", "report",
                        str(state)])
    frozen = launcher.run(without_python([*bare_env, exe, "report", str(state)]))
    assert frozen == pip and pip[0] == 0
    assert "█" in pip[1], pip


def test_reaps_orphans_as_pid1_without_python(launcher: Launcher, exe: str,
                                              tmp_path: Path) -> None:
    """Steps:
    1. the service (shell) starts 100 `sleep 999` through `( ... &)`: each
       subshell exits at once, so the sleeps are re-parented to gracerun (PID 1);
    2. wait until gracerun has all 100 as children; kill them (SIGKILL, by PID);
    3. within the deadline gracerun has no child left but the service: every
       orphan was reaped, and -w logged each one;
    4. SIGTERM: the service (exec'd sleep) dies of it, gracerun exits 143.
    """
    orphans = 100
    script = write_script(tmp_path, "orphans.sh", textwrap.dedent(f"""\
        #!/bin/sh
        i=0
        while [ "$i" -lt {orphans} ]; do (sleep 999 &); i=$((i + 1)); done
        echo spawned
        exec sleep 1000
        """))
    proc, pid = start_pid1(launcher, [exe, "-w", "--", "/bin/sh", script])
    proc.expect("^spawned")

    def orphan_pids() -> list[int]:
        return [c.pid for c in children(pid) if cmdline(c.pid) == ["sleep", "999"]]

    found = wait_for(lambda: len(orphan_pids()) == orphans and orphan_pids(),
                     what=f"{orphans} orphans re-parented to gracerun")
    service = [c.pid for c in children(pid) if cmdline(c.pid) == ["sleep", "1000"]]
    assert len(service) == 1
    for orphan in found:
        os.kill(orphan, signal.SIGKILL)
    wait_for(lambda: [c.pid for c in children(pid)] == service, timeout=20,
             what="gracerun to reap every orphan")
    proc.err.wait(r"warning: reaped orphan pid=\d+", count=orphans)
    os.kill(pid, signal.SIGTERM)
    assert proc.wait(20) == 143
    assert len(proc.err.matching(r"warning: reaped orphan pid=\d+")) == orphans


def test_budget_kill_as_pid1_without_python(launcher: Launcher, exe: str,
                                            tmp_path: Path) -> None:
    """Steps: the service ignores SIGTERM (and so does the sleep it execs);
    gracerun --budget 1s as PID 1: after SIGTERM it SIGKILLs the tree at the
    budget and exits 137, no sooner than 1 s and well before 10 s."""
    script = write_script(tmp_path, "stubborn.sh",
                          "#!/bin/sh\ntrap '' TERM\necho ready\nexec sleep 1000\n")
    proc, pid = start_pid1(launcher, [exe, "--budget", "1s", "--", "/bin/sh", script])
    proc.expect("^ready")
    wait_for(lambda: any(cmdline(c.pid) == ["sleep", "1000"] for c in children(pid)),
             what="the service to exec sleep")
    sent = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    assert proc.wait(20) == 137
    took = time.monotonic() - sent
    assert 1.0 <= took < 10.0, took
    assert "budget spent: SIGKILL sent to the whole tree" in proc.stderr


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_hooks_metrics_prestop_and_state_without_python(launcher: Launcher, exe: str,
                                                        tmp_path: Path) -> None:
    """Steps:
    1. a config with an exec notify hook (writes a file), a Nacos-style http
       PUT deregister hook (host and port from ${VAR}s), an https hook to a
       refused port (ssl loads, the hook fails and the sequence goes on), a
       connections drain probe, [server] listen, [control] socket, [state] file;
    2. the standalone gracerun runs a shell service with it as PID 1, without
       Python; /live and /ready answer 200, /metrics has gracerun's metrics;
    3. `gracerun prestop` (the standalone, without Python) exits 0 once the
       stop phase began; the exec hook ran; the PUT arrived with its query,
       and /ready answered 503 while it was being served;
    4. the service got SIGTERM from the stop phase and exited 0: gracerun exits
       0; the state file records the phases, and `gracerun report` renders it
       exactly as the pip install does.
    """
    metrics_port = free_port()
    hooks = HookServer()
    ready_during_deregister: list[int] = []
    nacos_path = "/nacos/v1/ns/instance?serviceName=demo&ip=10.0.0.7&port=8080&enabled=false"
    hooks.route(nacos_path, before_reply=lambda: ready_during_deregister.append(
        _get(f"http://127.0.0.1:{metrics_port}/ready")[0]))
    notified = tmp_path / "notified"
    state = tmp_path / "state.json"
    socket_path = tmp_path / "ctl.sock"
    config = tmp_path / "gracerun.toml"
    config.write_text(textwrap.dedent(f"""\
        [shutdown]
        budget = "20s"
        stop_grace = "5s"

        [[shutdown.notify.hooks]]
        name = "pause"
        type = "exec"
        command = ["/bin/sh", "-c", "echo notified >> {notified}"]

        [[shutdown.deregister.hooks]]
        name = "nacos"
        type = "http"
        method = "PUT"
        url = "http://${{NACOS_ADDR}}/nacos/v1/ns/instance?serviceName=demo&ip=${{POD_IP}}&port=8080&enabled=false"
        timeout = "2s"

        [[shutdown.deregister.hooks]]
        name = "tls"
        type = "http"
        url = "https://127.0.0.1:{free_port()}/"
        timeout = "2s"

        [shutdown.drain]
        probe = {{ type = "connections", port = {free_port()} }}
        timeout = "5s"

        [server]
        listen = "127.0.0.1:{metrics_port}"

        [control]
        socket = "{socket_path}"

        [state]
        file = "{state}"
        """))
    env = {"NACOS_ADDR": f"127.0.0.1:{hooks.port}", "POD_IP": "10.0.0.7"}
    script = write_script(tmp_path, "service.sh", SERVICE)
    try:
        proc, _ = start_pid1(launcher, [exe, "--config", str(config), "--", "/bin/sh", script],
                             env=env)
        proc.expect("^ready")
        assert _get(f"http://127.0.0.1:{metrics_port}/live")[0] == 200
        assert _get(f"http://127.0.0.1:{metrics_port}/ready")[0] == 200
        code, metrics = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert code == 200
        assert 'gracerun_build_info{python_version="' in metrics
        assert "gracerun_shutdown_in_progress 0.0" in metrics

        rc, _, err = launcher.run(without_python([exe, "prestop", "--config", str(config)],
                                                   env=env), timeout=30)
        assert rc == 0, err
        assert "shutdown reached the stop phase" in err
        assert notified.read_text() == "notified\n"
        (call,) = hooks.calls(nacos_path)
        assert call.method == "PUT"
        assert ready_during_deregister == [503]

        proc.expect("^got TERM")
        assert proc.wait(20) == 0
    finally:
        hooks.stop()
    log = proc.stderr
    assert "Traceback" not in log
    assert 'hook=tls kind=http outcome=failed' in log and "connection refused" in log, log
    assert "hook=nacos kind=http outcome=ok" in log, log
    recorded = json.loads(state.read_text())
    text = json.dumps(recorded)
    for phase in ("notify", "deregister", "drain", "stop"):
        assert f'"{phase}"' in text, text

    pip = launcher.run([PY, "-m", "gracerun", "report", str(state)])
    frozen = launcher.run(without_python([exe, "report", str(state)]))
    assert frozen == pip and pip[0] == 0


@pytest.mark.parametrize("args", [
    ["help-config"],
    ["--help"],
    ["--version"],
    ["check"],
    ["check", "--config", "{repo}/examples/gracerun.toml", "--grace-period", "35"],
    ["check", "--config", "{repo}/examples/gracerun.toml", "--grace-period", "30"],
    ["check", "--config", "{tmp}/bad.toml"],
    ["--budget", "soon", "--", "true"],
], ids=["help-config", "help", "version", "check-defaults", "check-fits", "check-does-not-fit",
        "config-error", "flag-error"])
def test_commands_print_what_the_pip_install_prints(launcher: Launcher, exe: str,
                                                    tmp_path: Path, args: list[str]) -> None:
    """Steps: the same command, once with the pip install and once with the
    standalone build without Python: the same exit code, stdout and stderr
    (including the one-line errors with exit 2 and the did-you-mean, which
    import modules lazily)."""
    (tmp_path / "bad.toml").write_text('[shutdown]\nbudgte = "10s"\n')
    argv = [a.format(repo=REPO, tmp=tmp_path) for a in args]
    pip = launcher.run([PY, "-m", "gracerun", *argv])
    frozen = launcher.run(without_python([exe, *argv]))
    assert frozen == pip
    assert "Traceback" not in pip[2]


# ------------------------------------------------------- what the build omits


def test_only_gracerun_keeps_its_asserts(exe: str) -> None:
    """The spec compiles the stdlib and dependencies with -OO, gracerun's own
    modules as written but without docstrings.  Steps: in the bundle's .pyc
    files, gracerun's modules raise AssertionError where the source asserts and
    hold no docstring; the stdlib's (asyncio, which asserts) do neither; and no
    gracerun source reads a docstring (`__doc__`, inspect.getdoc), which is what
    makes dropping them safe: the check can fail."""
    magic = importlib.util.MAGIC_NUMBER
    internal = BUNDLE / "_internal"

    def code(relative: str) -> types.CodeType:
        data = (internal / relative).read_bytes()
        if data[:4] != magic:
            pytest.skip(f"the bundle's Python is not this one ({sys.version.split()[0]})")
        return marshal.loads(data[16:])

    def asserts(co: types.CodeType) -> bool:
        return (any(i.opname == "LOAD_ASSERTION_ERROR" for i in dis.get_instructions(co))
                or any(asserts(c) for c in co.co_consts if isinstance(c, types.CodeType)))

    source = (REPO / "gracerun" / "core" / "signals.py").read_text()
    assert "assert " in source and source.lstrip().startswith('"""')
    own = code("gracerun/core/signals.pyc")
    assert asserts(own) and not isinstance(own.co_consts[0], str)
    stdlib = code("asyncio/base_events.pyc")
    assert "assert " in (Path(asyncio.__file__).parent / "base_events.py").read_text()
    assert not asserts(stdlib) and not isinstance(stdlib.co_consts[0], str)
    readers = [str(path.relative_to(REPO)) for path in (REPO / "gracerun").rglob("*.py")
               if "__doc__" in (text := path.read_text()) or "getdoc" in text]
    assert readers == []


def test_nothing_gracerun_imports_is_excluded_from_the_build(tmp_path: Path) -> None:
    """The spec's EXCLUDES must not remove a module gracerun imports.

    Steps: in a fresh interpreter (this venv), block every excluded module
    (an import of one raises ImportError, as in the build), then import every
    gracerun module and every module any gracerun file imports, at the top or
    inside a function: none may fail.  A negative control blocks `json` the
    same way and sees the failure.
    """
    tree = ast.parse(SPEC.read_text())
    excludes = next(ast.literal_eval(node.value) for node in tree.body
                    if isinstance(node, ast.Assign)
                    and getattr(node.targets[0], "id", "") == "EXCLUDES")
    probe = textwrap.dedent("""\
        import ast, importlib, pkgutil, sys
        from pathlib import Path

        blocked = sys.argv[1].split(",")

        def is_blocked(name):
            return any(name == b or name.startswith(b + ".") for b in blocked)

        class Block:  # no importlib.abc: that import alone pulls in lzma and bz2
            @staticmethod
            def find_spec(name, path=None, target=None):
                if is_blocked(name):
                    raise ImportError(f"excluded from the build: {name}", name=name)
                return None

        early = sorted(m for m in sys.modules if is_blocked(m))
        if early:
            sys.exit(f"imported before the check could start: {early}")
        sys.meta_path.insert(0, Block())
        import gracerun

        names = set()
        for path in Path(gracerun.__path__[0]).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module)
        for info in pkgutil.walk_packages(gracerun.__path__, "gracerun."):
            if not info.name.endswith("__main__"):
                names.add(info.name)
        failed = []
        for name in sorted(names):
            try:
                importlib.import_module(name)
            except ImportError as exc:
                failed.append(f"{name}: {exc}")
        print("\\n".join(failed) or "ok")
        """)
    script = tmp_path / "probe.py"
    script.write_text(probe)

    def run(blocked: list[str]) -> str:
        proc = subprocess.run([PY, "-I", str(script), ",".join(blocked)], capture_output=True,
                              text=True, timeout=60, check=False, cwd=tmp_path)
        return proc.stdout.strip() + proc.stderr.strip()

    assert run(excludes) == "ok"
    assert "gracerun.observe.state: excluded from the build: json" in run([*excludes, "json"])
