"""Every option is declared once, and the docs and the code cannot disagree.

The declarations (settings.SETTINGS for gracerun's own tables, the `opt()` fields
of plan.py's records for phases, hooks and probes) are what the readers, the
run flags, `gracerun help-config` and docs/configuration.md's tables all come
from.  These tests hold each of those to the declarations, and show with
negative controls that they would notice a change.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gracerun import cli
from gracerun.config import load as config
from gracerun.config import plan, reference, settings
from gracerun.config.plan_reader import default_of

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "configuration.md"
STALE = (f"docs/configuration.md is out of date with the option declarations: run "
         f"`{reference.WRITE_COMMAND}` and commit the result")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRACERUN_", "PYTEST_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


# ------------------------------------------------------------ the docs page


def test_docs_tables_are_the_generated_ones() -> None:
    """Regenerating docs/configuration.md from the declarations changes nothing."""
    text = DOC.read_text()
    assert reference.update(text) == text, STALE


def test_a_changed_declaration_makes_the_docs_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: a different default, or a new option, makes the page stale."""
    text = DOC.read_text()
    budget = settings.BY_KEY["shutdown.budget"]
    monkeypatch.setattr(budget, "default", 45.0)
    assert reference.update(text) != text
    assert '| `budget` | `"45s"` |' in reference.update(text)
    monkeypatch.undo()
    extra = settings.Setting("log.colour", help="paint the log", parse=settings.values.boolean,
                             default=False)
    monkeypatch.setitem(settings.TABLES, "log", (*settings.TABLES["log"], extra))
    assert "| `colour` | `false` | paint the log. |" in reference.update(text)


def test_docs_lacking_a_generated_table_are_rejected() -> None:
    text = DOC.read_text()
    start = text.index("<!-- generated: hooks.sleep -->")
    end = text.index("<!-- end generated -->", start) + len("<!-- end generated -->")
    with pytest.raises(ValueError, match=r"hooks\.sleep"):
        reference.update(text[:start] + text[end:])
    with pytest.raises(ValueError, match="no generated table"):
        reference.update(text + "\n<!-- generated: nonsense -->\n<!-- end generated -->\n")


def test_the_write_command_brings_a_stale_page_up_to_date(tmp_path: Path) -> None:
    """What the failure message tells you to run fixes what the test checks."""
    stale = DOC.read_text().replace('| `budget` | `"30s"` |', '| `budget` | `"20s"` |')
    page = tmp_path / "configuration.md"
    page.write_text(stale)
    check = subprocess.run([sys.executable, "-m", "gracerun.config.reference", "--check",
                            str(page)], env=_env(), capture_output=True, text=True, timeout=30)
    assert check.returncode == 1
    assert reference.WRITE_COMMAND in check.stderr
    write = subprocess.run([sys.executable, "-m", "gracerun.config.reference", "--write",
                            str(page)], env=_env(), capture_output=True, text=True, timeout=30)
    assert write.returncode == 0, write.stderr
    assert page.read_text() == DOC.read_text()


# ------------------------------------------------------------- help-config


def test_help_config_prints_every_declaration(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "gracerun", "help-config"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == reference.reference()
    for s in settings.SETTINGS:
        assert f"## [{s.table}]" in proc.stdout
        assert f"| `{s.name}` | {reference._setting_default(s)} |" in proc.stdout
        for flag in s.flags:
            assert f"`{flag}`" in proc.stdout
    for kind, cls in {**plan.HOOKS, **plan.PROBES}.items():
        for f in dataclasses.fields(cls):
            keys = ", ".join(f"`{k}`" for k in f.metadata["keys"] or (f.name,))
            assert f"| {keys} |" in proc.stdout, (kind, f.name)


# ----------------------------------------------- one declaration per option


def test_every_record_field_is_a_declared_key() -> None:
    """Each field of the plan's records is declared with opt(): help, and a parser or
    a reader of its own; required fields say what the missing message asks for."""
    records = [*plan.HOOKS.values(), *plan.PROBES.values(), plan.HookPhase,
               plan.PropagateConfig, plan.DrainConfig]
    for cls in records:
        for f in dataclasses.fields(cls):
            meta = f.metadata
            assert meta.get("help"), f"{cls.__name__}.{f.name} has no help"
            required = default_of(f) is dataclasses.MISSING
            assert not required or meta["expect"] or meta["rule"] or meta["keys"], \
                f"{cls.__name__}.{f.name} is required but says nothing of what is expected"


# (record, the TOML table whose declared options are its fields)
RECORDS: list[tuple[Any, str]] = [
    (config.SignalsConfig, "signals"), (config.ProcessConfig, "process"),
    (config.LogConfig, "log"), (config.ShutdownConfig, "shutdown"),
    (config.ServerConfig, "server"), (config.StateConfig, "state"),
    (config.PushgatewayConfig, "state.pushgateway"), (config.ControlConfig, "control"),
]


@pytest.mark.parametrize(("record", "table"), RECORDS, ids=[t for _, t in RECORDS])
def test_records_are_the_declared_options(record: Any, table: str) -> None:
    """load.py's records have exactly the declared keys as fields, with the declared
    defaults: adding an option to one without the other fails here."""
    declared = settings.TABLES[table]
    assert set(record._fields) == {s.name for s in declared}
    for s in declared:
        if s.name in record._field_defaults:
            assert record._field_defaults[s.name] == s.default, s.key
        else:
            assert s.expect, f"{s.key}: a record field without a default must be required"


def test_defaults_without_a_file_are_the_declared_ones() -> None:
    cfg = config.build({})
    for s in settings.SETTINGS:
        if (s.parse is None and s.expand is None) or s.table == "state.pushgateway":
            continue
        value = getattr(getattr(cfg, s.table), s.name)
        assert value == s.default, s.key


def test_run_flags_are_the_declared_flags() -> None:
    """Every flag of a declaration is a run flag whose value lands on its key."""
    parser = cli._run_parser()
    by_flag = {flag: action for action in parser._actions for flag in action.option_strings}
    for s in settings.SETTINGS:
        for flag in s.flags:
            assert by_flag[flag].dest == s.key.replace(".", "__"), flag
            assert s.key in (by_flag[flag].help or "")


# ------------------------------------------------------- rules for defaults


def test_stop_grace_rule_and_its_words_come_from_one_place() -> None:
    rule = settings.STOP_GRACE
    assert [rule(b) for b in (30.0, 20.0, 12.0, 1.0)] == [5.0, 5.0, 3.0, 0.25]
    assert rule.text == '"5s", or a quarter of a budget under 20s'
    assert config.ShutdownConfig(budget=12.0).effective_stop_grace == 3.0
    other = settings.StopGraceRule(cap=3.0, parts=2)
    assert other(4.0) == 2.0 and other.text == '"3s", or half of a budget under 6s'
    assert settings.BY_KEY["shutdown.stop_grace"].default_text() == rule.text


def test_control_socket_rule() -> None:
    rule = settings.CONTROL_SOCKET
    assert rule("/run/x.sock", pid1=True, environ={rule.env: "/env.sock"}) == "/run/x.sock"
    assert rule(None, pid1=False, environ={rule.env: "/env.sock"}) == "/env.sock"
    assert rule(None, pid1=True, environ={}) == rule.path == config.DEFAULT_CONTROL_SOCKET
    assert rule(None, pid1=False, environ={}) is None
    assert rule.text.startswith(f"${rule.env}, else when PID 1 {rule.path} as root, ")


def test_stop_signal_rule() -> None:
    import signal

    rule = settings.STOP_SIGNAL
    assert rule(signal.SIGINT, {}) == signal.SIGINT
    assert rule(signal.SIGTERM, {signal.SIGTERM: signal.SIGQUIT}) == signal.SIGQUIT
    assert rule(None, {signal.SIGTERM: signal.SIGQUIT}) == signal.SIGQUIT
    sd = config.ShutdownConfig(stop_signal=signal.SIGUSR2)
    assert sd.stop_signal_for(signal.SIGTERM, {signal.SIGTERM: 0}) == signal.SIGUSR2


# ------------------------------------------------------------- start-up cost


def test_a_bare_run_imports_no_dataclasses_argparse_or_inspect(tmp_path: Path) -> None:
    """`gracerun -- CMD` with no config and no flags reads the declarations without
    the modules that made start-up slow; a run with a flag does need argparse
    (the negative control: the check can see an import)."""
    def imported(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gracerun", *args,
                               "--", "true"], cwd=tmp_path, env=_env(), capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    bare = {line.rpartition("|")[2].strip() for line in imported().splitlines()}
    assert "gracerun.config.settings" in bare
    assert not bare & {"dataclasses", "argparse", "inspect", "gracerun.config.plan"}, bare
    flagged = {line.rpartition("|")[2].strip() for line in imported("-t", "20s").splitlines()}
    assert "argparse" in flagged
