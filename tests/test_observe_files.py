"""What gracerun writes and reads on disk, against other users and hostile files.

Writes (state file, textfile) go only over regular files or nothing, never
through a symlink or a directory another user controls, with the modes
docs/security.md states.  Reads trust nothing: a state file may be a FIFO, a
symlink, another user's, 100,000 '[' deep, or full of NaN, huge numbers,
non-string names and escape sequences; each is one warning (or, for
`gracerun report`, one error line), never a crash.

The tests run as root and play "another user" with uid 65534 (chown).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from gracerun.core import log
from gracerun.core.lifecycle import Lifecycle, State
from gracerun.core.timeline import HookRecord, Timeline
from gracerun.errors import GracerunError
from gracerun.observe import files, report, state
from gracerun.observe.metrics import LastShutdownCollector

pytestmark = pytest.mark.timeout(30)

OTHER = 65534  # "nobody": a user that is neither root nor gracerun's


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("plays other users with chown: needs root")


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A directory anyone may write to, like /tmp (mode 1777)."""
    tmp_path.chmod(0o755)
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o1777)
    return d


def timeline(detail: str = "") -> Timeline:
    now = [100.0]
    lc = Lifecycle(lambda: now[0], 5.0)
    lc.enter(State.READY, "service started")
    lc.enter(State.DEREGISTER, "signal SIGTERM")
    lc.hook(HookRecord(phase="deregister", name="registry", kind="http", start=0.0,
                       duration=0.5, outcome="failed", detail=detail))
    now[0] += 1.0
    lc.enter(State.DONE, "hook failed", exit_code=0)
    return lc.timeline


def warnings(records: list[log.Record]) -> list[str]:
    return [f"{r.message()} {r.fields}" for r in records if r.level >= log.WARNING]


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("gracerun_test", "a test counter", registry=reg).inc()
    return reg


# -------------------------------------------------------------------- modes


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_state_file_is_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "state" / "last.json"
    old = os.umask(umask)
    try:
        state.save(str(path), timeline(), 0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 & ~umask  # created by us
    assert state.load(str(path))["exit_code"] == 0


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_textfile_follows_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """node_exporter usually reads it as another user: the umask decides."""
    path = tmp_path / "gracerun.prom"
    old = os.umask(umask)
    try:
        state.write_textfile(str(path), registry())
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert b"gracerun_test_total 1.0" in path.read_bytes()


def test_a_secret_in_a_hook_url_is_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "last.json"
    detail = ("DELETE http://reg/x?token=s3cr3t: unexpected status 500 \x1b[31mboom "
              "(after 1 attempt(s))")
    state.save(str(path), timeline(detail), 0)
    raw = path.read_text()
    assert "s3cr3t" not in raw and "\\u001b" not in raw
    assert state.load(str(path))["hooks"][0]["detail"] == (
        "DELETE http://reg/x?[redacted]: unexpected status 500 \\x1b[31mboom "
        "(after 1 attempt(s))")


# ------------------------------------------------------ what is not replaced


def _special(kind: str, path: Path) -> None:
    if kind == "device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a /dev/null
        except PermissionError:
            pytest.skip("cannot create device nodes here")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        import socket
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))


@pytest.mark.parametrize("kind", ["device", "fifo", "directory", "socket"])
@pytest.mark.parametrize("output", ["state", "textfile"])
def test_only_regular_files_are_replaced(tmp_path: Path, kind: str, output: str) -> None:
    """`[state] file = "/dev/null"` replaced the device node with a regular file.
    Steps: the target is a device node (as /dev/null), a FIFO, a directory or a
    socket; writing the output leaves it as it was and logs one warning."""
    target = tmp_path / "target"
    _special(kind, target)
    before = os.lstat(target)
    with log.capture(log.WARNING) as logged:
        if output == "state":
            state.save(str(target), timeline(), 0)
        else:
            state.write_textfile(str(target), registry())
    after = os.lstat(target)
    assert (stat.S_IFMT(after.st_mode), after.st_ino) == (stat.S_IFMT(before.st_mode),
                                                          before.st_ino)
    assert len(warnings(logged)) == 1, warnings(logged)
    assert "not a regular file" in warnings(logged)[0]
    assert [p.name for p in tmp_path.iterdir()] == ["target"]  # no temporary file left


@pytest.mark.parametrize("output", ["state", "textfile"])
def test_a_symlink_at_the_target_is_not_followed(shared: Path, tmp_path: Path, output: str) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = shared / "out"
    target.symlink_to(victim)
    os.lchown(target, OTHER, OTHER)
    with log.capture(log.WARNING) as logged:
        if output == "state":
            state.save(str(target), timeline(), 0)
        else:
            state.write_textfile(str(target), registry())
    assert victim.read_text() == "precious\n"
    assert target.is_symlink()
    assert "not a regular file" in warnings(logged)[0]


def test_the_textfile_temporary_name_cannot_be_planted(shared: Path, tmp_path: Path) -> None:
    """prometheus_client's write_to_textfile writes to PATH.PID.THREAD first, a name
    anyone can predict (PID 1 in a container), and follows a symlink planted there.
    Steps: another user plants that symlink to a file of root's; the textfile is
    written; root's file is untouched and the textfile holds the metrics."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = shared / "gracerun.prom"
    planted = Path(f"{target}.{os.getpid()}.{threading.current_thread().ident}")
    planted.symlink_to(victim)
    os.lchown(planted, OTHER, OTHER)
    state.write_textfile(str(target), registry())
    assert victim.read_text() == "precious\n"
    assert b"gracerun_test_total 1.0" in target.read_bytes()
    assert not target.is_symlink()


@pytest.mark.parametrize("output", ["state", "textfile"])
def test_a_directory_swapped_for_a_symlink_is_refused(shared: Path, tmp_path: Path,
                                                      output: str) -> None:
    """Another user makes the configured directory a symlink into root's files.
    Steps: shared/app -> tmp/victims (a directory of root's holding out.json);
    writing shared/app/out.json refuses (warning) and root's file is untouched."""
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "out.json").write_text("precious\n")
    link = shared / "app"
    link.symlink_to(victims)
    os.lchown(link, OTHER, OTHER)
    with log.capture(log.WARNING) as logged:
        if output == "state":
            state.save(str(link / "out.json"), timeline(), 0)
        else:
            state.write_textfile(str(link / "out.json"), registry())
    assert (victims / "out.json").read_text() == "precious\n"
    assert f"{link} is a symlink owned by uid {OTHER}" in warnings(logged)[0]


def test_a_directory_of_another_user_is_refused(shared: Path) -> None:
    theirs = shared / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER, OTHER)
    with log.capture(log.WARNING) as logged:
        state.save(str(theirs / "sub" / "last.json"), timeline(), 0)
    assert list(theirs.iterdir()) == []  # not even the missing directory is made there
    assert f"{theirs} is owned by uid {OTHER}, not by uid 0 or root" in warnings(logged)[0]


def test_a_root_owned_world_writable_directory_is_used(tmp_path: Path) -> None:
    """A Kubernetes emptyDir is root's with mode 0777: writing there is safe (a new
    O_EXCL file renamed over the target) and allowed."""
    tmp_path.chmod(0o755)
    empty_dir = tmp_path / "emptydir"
    empty_dir.mkdir()
    empty_dir.chmod(0o777)
    state.save(str(empty_dir / "last.json"), timeline(), 3)
    assert state.load(str(empty_dir / "last.json"), trusted=True)["service_exit_code"] == 3


def test_trusted_symlinks_on_the_way_are_followed(tmp_path: Path) -> None:
    """/var/run -> /run: a symlink of root's in a directory only root writes to."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to("real")
    state.save(str(tmp_path / "alias" / "last.json"), timeline(), 0)
    assert (real / "last.json").is_file()


def test_open_dir_walks_dot_dot_and_relative_links(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "up").symlink_to("../a/b/..")
    fd = files.open_dir(str(tmp_path / "a" / "up" / "b"))
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "a" / "b"))
    finally:
        os.close(fd)


# ------------------------------------------------------------------ reading


def test_reading_a_fifo_does_not_block(tmp_path: Path) -> None:
    """A FIFO at the state file's path: open() without O_NONBLOCK waits for a writer
    forever, before the service starts."""
    path = tmp_path / "last.json"
    os.mkfifo(path)
    result: list[Any] = []
    with log.capture(log.WARNING) as logged:
        reader = threading.Thread(target=lambda: result.append(state.read_previous(str(path))),
                                  daemon=True)
        reader.start()
        reader.join(5)
    if reader.is_alive():  # unblock the reader so the thread ends with the test
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        reader.join(5)
        pytest.fail("reading the state file blocked on a FIFO")
    assert result == [None]
    assert "a FIFO, not a regular file" in warnings(logged)[0]


@pytest.mark.parametrize("case", ["symlink", "other user"])
def test_a_planted_state_file_is_ignored(shared: Path, tmp_path: Path, case: str) -> None:
    good = tmp_path / "good.json"
    state.save(str(good), timeline(), 0)
    path = shared / "last.json"
    if case == "symlink":
        path.symlink_to(good)
    else:
        path.write_bytes(good.read_bytes())
        os.chown(path, OTHER, OTHER)
    with log.capture(log.WARNING) as logged:
        assert state.read_previous(str(path)) is None
    assert len(warnings(logged)) == 1
    assert ("is a symlink" if case == "symlink" else f"owned by uid {OTHER}") in \
        warnings(logged)[0]


def sample(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema": 1, "gracerun_version": "0.1.0", "trigger": "signal SIGTERM",
        "started_at": 1_700_000_000.0, "budget_seconds": 10.0, "duration_seconds": 2.0,
        "exit_code": 0, "killed": False, "service_exit_code": 143,
        "phases": [{"name": "deregister", "start": 0.0, "duration": 1.0, "reason": "done",
                    "detail": {"failed": "", "quiet_for": 0.5}},
                   {"name": "stop", "start": 1.0, "duration": 1.0, "reason": "tree gone",
                    "detail": {}}],
        "hooks": [{"phase": "deregister", "name": "reg", "kind": "http", "start": 0.0,
                   "duration": 1.0, "outcome": "ok", "detail": "HTTP 200"}],
    }
    record.update(changes)
    return record


def phase(**changes: Any) -> list[dict[str, Any]]:
    return [{**sample()["phases"][0], **changes}]


def hook(**changes: Any) -> list[dict[str, Any]]:
    return [{**sample()["hooks"][0], **changes}]


BAD_RECORDS: list[tuple[str, bytes, str]] = [
    ("100,000 [", b"[" * 100_000, "nested 9 levels deep"),
    ("deep in a string is fine, deep outside is not",
     json.dumps(sample(trigger="[" * 50)).encode()[:-1] + b', "x": ' + b"[" * 20 + b"]" * 20
     + b"}", "nested"),
    ("NaN", json.dumps(sample()).replace("10.0", "NaN").encode(), "NaN is not a number"),
    ("Infinity", json.dumps(sample()).replace("10.0", "-Infinity").encode(), "Infinity"),
    ("huge float", json.dumps(sample()).replace("10.0", "1e400").encode(),
     "from 0 to 1e+07 in 'budget_seconds'"),
    ("huge int", json.dumps(sample()).replace("10.0", "9" * 400).encode(),
     "from 0 to 1e+07 in 'budget_seconds'"),
    ("far future", json.dumps(sample(started_at=1e300)).encode(), "'started_at'"),
    ("negative duration", json.dumps(sample(duration_seconds=-1)).encode(),
     "'duration_seconds'"),
    ("schema true", json.dumps(sample(schema=True)).encode(), "expected schema 1"),
    ("phase name a number", json.dumps(sample(phases=phase(name=7))).encode(),
     "expected a string in phases[].name"),
    ("phase name an object", json.dumps(sample(phases=phase(name={"a": 1}))).encode(),
     "expected a string in phases[].name"),
    ("hook outcome a list", json.dumps(sample(hooks=hook(outcome=[]))).encode(),
     "expected a string in hooks[].outcome"),
    ("hook detail a number", json.dumps(sample(hooks=hook(detail=1))).encode(),
     "expected a string in hooks[].detail"),
    ("hook start NaN-free but huge", json.dumps(sample(hooks=hook(start=1e9))).encode(),
     "hooks[].start"),
    ("exit code 1000", json.dumps(sample(exit_code=1000)).encode(), "'exit_code'"),
    ("killed 1", json.dumps(sample(killed=1)).encode(), "'killed'"),
    ("too many hooks", json.dumps(sample(hooks=hook() * 1001)).encode(), "at most 1000"),
    ("not UTF-8", b"\xff\xfe{}", "not valid JSON"),
    ("too large", b" " * (state.MAX_STATE_BYTES + 1) + b"{}", "larger than"),
]


@pytest.mark.parametrize(("name", "raw", "problem"), BAD_RECORDS,
                         ids=[b[0] for b in BAD_RECORDS])
def test_bad_state_files_are_refused_in_one_line(tmp_path: Path, name: str, raw: bytes,
                                                 problem: str) -> None:
    path = tmp_path / "last.json"
    path.write_bytes(raw)
    with pytest.raises(state.StateFileError, match=re.escape(problem)):
        state.load(str(path))
    with log.capture(log.WARNING) as logged:
        assert state.read_previous(str(path)) is None
    assert len(warnings(logged)) == 1
    with pytest.raises(GracerunError, match="not a gracerun state file") as err:
        report.main([str(path)])
    assert "\n" not in str(err.value)


def test_escapes_in_names_never_reach_the_report(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Steps: a state file whose trigger, phase, hook names and details carry ANSI and
    OSC escapes and markup; the text report prints them as visible escapes; the SVG
    parses as XML and holds no control character; /metrics (the last-shutdown
    collector) renders."""
    evil = "\x1b]0;owned\x07\x1b[2J<script>&"
    path = tmp_path / "last.json"
    path.write_text(json.dumps(sample(
        trigger=evil, phases=phase(name=evil, reason=evil),
        hooks=hook(phase=evil, name=evil, outcome="failed", detail=evil + " http://h/?k=s3"))))
    assert report.main([str(path)]) == 0
    text = capsys.readouterr().out
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b]0;owned\\x07\\x1b[2J<script>&" in text
    assert "s3" not in text.replace("\\x1b[2J", "")
    svg_path = tmp_path / "s.svg"
    assert report.main([str(path), "--format", "svg", "--output", str(svg_path)]) == 0
    svg = svg_path.read_text()
    ET.fromstring(svg)
    assert not any(ord(c) < 0x20 and c not in "\n" for c in svg)
    assert "<script>" not in svg
    reg = CollectorRegistry()
    reg.register(LastShutdownCollector(state.load(str(path))))
    assert b"gracerun_last_shutdown_phase_seconds" in generate_latest(reg)


def test_long_strings_are_cut(tmp_path: Path) -> None:
    path = tmp_path / "last.json"
    path.write_text(json.dumps(sample(hooks=hook(name="n" * 10_000, detail="d" * 100_000))))
    data = state.load(str(path))
    assert len(data["hooks"][0]["name"]) == state.NAME_CHARS + 3
    assert len(data["hooks"][0]["detail"]) == state.DETAIL_CHARS + 3


def test_detail_keeps_only_scalars(tmp_path: Path) -> None:
    path = tmp_path / "last.json"
    path.write_text(json.dumps(sample(phases=phase(detail={"a": 1, "b": [1], "c": {"d": 2},
                                                           "e": "x", "f": None}))))
    assert state.load(str(path))["phases"][0]["detail"] == {"a": 1, "e": "x", "f": None}


def test_report_of_a_hostile_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    """`gracerun report` on NaN, huge numbers, non-string names, 100,000 '[': exit 1,
    one line on stderr, nothing on stdout."""
    for raw in (b"[" * 100_000, json.dumps(sample()).replace("10.0", "NaN").encode(),
                json.dumps(sample(phases=phase(name=7))).encode(),
                json.dumps(sample(started_at=1e300)).encode()):
        path = tmp_path / "last.json"
        path.write_bytes(raw)
        proc = subprocess.run([sys.executable, "-m", "gracerun", "report", str(path)],
                              capture_output=True, text=True, timeout=30,
                              cwd=Path(__file__).parents[1])
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(
            f"gracerun: error: report: {path}: not a gracerun state file: "), proc.stderr


def test_depth_scan_skips_strings() -> None:
    assert state._depth(b'{"a": "[[[[[[[[[[[[[[[\\"[[[[[", "b": [[]]}') == 3
    assert state._depth(b"[" * 100_000) == state.MAX_DEPTH + 1
    assert not math.isnan(state.parse(json.dumps(sample()).encode())["budget_seconds"])


def test_report_follows_a_symlink_its_user_chose(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`gracerun report` reads what a person names, through a symlink too (only
    gracerun's own start-up read refuses one)."""
    real = tmp_path / "real.json"
    real.write_text(json.dumps(sample()))
    (tmp_path / "link.json").symlink_to(real)
    assert report.main([str(tmp_path / "link.json")]) == 0
    assert "deregister" in capsys.readouterr().out


def test_the_startup_record_is_kept_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "last.json"
    startup = {"ready_after": 0.5, "phases": [{"name": "starting", "start": 0.0,
                                               "duration": 0.5, "reason": "ready\x1b[2J"}],
               "hooks": []}
    path.write_text(json.dumps(sample(startup=startup)))
    kept = state.load(str(path))["startup"]
    assert kept["ready_after"] == 0.5 and kept["phases"][0]["reason"] == "ready\\x1b[2J"
    path.write_text(json.dumps(sample(startup={**startup, "ready_after": "soon"})))
    with pytest.raises(state.StateFileError, match=r"startup\.ready_after"):
        state.load(str(path))
    path.write_text(json.dumps(sample()))  # older files have none
    assert "startup" not in state.load(str(path))
