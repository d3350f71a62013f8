"""The option reference, generated from the declarations so that it cannot drift.

Options of gracerun's own tables are declared in settings.SETTINGS; the phases,
hooks and probes on the fields of plan.py's records.  Both `gracerun
help-config` and the tables of docs/configuration.md (between `<!-- generated:
NAME -->` and `<!-- end generated -->` markers) come from `blocks()`;
tests/test_config_docs.py fails when the page and the code disagree, and

    python -m gracerun.config.reference --write

brings the page up to date.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gracerun.config import kinds, plan, settings, values
from gracerun.config.plan_reader import default_of
from gracerun.config.record import MISSING, Field, fields

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
WRITE_COMMAND = "python -m gracerun.config.reference --write"
_MARKED = re.compile(r"(<!-- generated: (\S+) -->\n)(.*?)(<!-- end generated -->)", re.DOTALL)


def _sentence(*parts: str) -> str:
    """Help and further sentences as one cell, each ending with a full stop."""
    kept = [p.strip() for p in parts if p.strip()]
    return " ".join(p if p.endswith(".") else p + "." for p in kept)


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


_HEAD = ("| key | default | meaning |", "| --- | --- | --- |")


# ---------------------------------------------------------- gracerun's tables


def _setting_default(s: settings.Setting) -> str:
    text = s.default_text()
    return f"`{text}`" if s.default is not None and not s.expect and s.rule is None else text


def _settings_table(table: str) -> list[str]:
    rows = [_row(f"`{s.name}`", _setting_default(s), _sentence(s.help, s.more))
            for s in settings.TABLES[table]]
    return [*_HEAD, *rows]


def _flags_table() -> list[str]:
    rows = ["| key | flags | default | meaning |", "| --- | --- | --- | --- |"]
    for s in settings.SETTINGS:
        if s.flags:
            flags = ", ".join(f"`{f}`" for f in s.flags)
            rows.append(_row(f"`{s.key}`", flags, _setting_default(s), _sentence(s.help)))
    return rows


# ------------------------------------------------------- phases, hooks, probes


def _field_default(f: Field) -> str:
    meta = f.metadata
    if meta["expect"]:
        return "required"
    if meta["rule"]:
        rule = meta["rule"]
        return f"`{rule.format(type='<type>', n='<n>')}`" if "{" in rule else rule
    if meta["shown"] is not None:
        return str(meta["shown"])
    value = default_of(f)
    if value is MISSING:
        return "required"
    return "none" if value is None else f"`{values.show(value)}`"


def _field_row(f: Field, default: str | None = None) -> str:
    keys = ", ".join(f"`{k}`" for k in f.metadata["keys"] or (f.name,))
    return _row(keys, default or _field_default(f),
                _sentence(f.metadata["help"], f.metadata["more"]))


def _record_table(cls: type, skip: tuple[str, ...] = ()) -> list[str]:
    return [*_HEAD, *(_field_row(f) for f in fields(cls) if f.name not in skip)]


def _type_row(records: Mapping[str, Any]) -> str:
    names = [f"`{k}`" for k in records]
    return _row("`type`", "required", f"{', '.join(names[:-1])} or {names[-1]}.")


def _common_table(base: type, records: Mapping[str, Any]) -> list[str]:
    """The keys every kind has; a default some records change is shown with theirs."""
    rows = [*_HEAD, _type_row(records)]
    for f in fields(base):
        default = _field_default(f)
        changed = []
        for kind, cls in records.items():
            mine = next(g for g in fields(cls) if g.name == f.name)
            if _field_default(mine) != default:
                changed.append(f"{kind}: {_field_default(mine)}")
        rows.append(_field_row(f, f"{default} ({'; '.join(changed)})" if changed else None))
    return rows


def _kind_table(cls: type, base: type) -> list[str]:
    return _record_table(cls, skip=tuple(f.name for f in fields(base)))


def _places_table() -> list[str]:
    rows = ["| place | kinds | the reading means |", "| --- | --- | --- |"]
    rows += [_row(f"`{where}`", ", ".join(kinds()), means)
             for where, kinds, means in plan.PROBE_PLACES]
    return rows


def _expanded() -> list[str]:
    """Which keys expand ${VAR}: those whose parser takes the environment."""
    found: dict[str, list[str]] = {}
    for name, records in (("hooks", plan.HOOKS), ("probes", plan.PROBES)):
        for cls in records.values():
            for f in fields(cls):
                if f.metadata["expand"]:
                    for key in f.metadata["keys"] or (f.name,):
                        if f"`{key}`" not in found.setdefault(name, []):
                            found[name].append(f"`{key}`")
    found["gracerun's own tables"] = [f"`{s.key}`" for s in settings.SETTINGS if s.expand]
    return [f"- {where}: {', '.join(keys)}" for where, keys in found.items()]


# ---------------------------------------------------------------- the output


def blocks() -> dict[str, list[str]]:
    """Every generated table, by the name its marker in the docs carries."""
    out: dict[str, list[str]] = {}
    for table in settings.TABLES:
        out[table] = _settings_table(table)
    out["shutdown.notify"] = _record_table(plan.HookPhase)
    out["shutdown.propagate"] = _record_table(plan.PropagateConfig)
    out["shutdown.drain"] = _record_table(plan.DrainConfig)
    out["startup"] = _record_table(plan.StartupConfig)
    out["hooks"] = _common_table(kinds.Hook, plan.HOOKS)
    for kind, hook in plan.HOOKS.items():
        out[f"hooks.{kind}"] = _kind_table(hook, kinds.Hook)
    out["probes.places"] = _places_table()
    out["probes"] = _common_table(kinds.Probe, plan.PROBES)
    for kind, probe in plan.PROBES.items():
        out[f"probes.{kind}"] = _kind_table(probe, kinds.Probe)
    out["expanded"] = _expanded()
    out["flags"] = _flags_table()
    return out


_TITLES = {"shutdown.notify": "[shutdown.notify] and [shutdown.deregister]",
           "hooks": "Hooks: the keys of every kind", "probes.places": "Where probes go",
           "probes": "Probes: the keys of every kind", "expanded": "Keys that expand ${VAR}",
           "flags": "Options that are also flags"}


def _title(name: str) -> str:
    if name in _TITLES:
        return _TITLES[name]
    head, _, kind = name.partition(".")
    return f"{head[:-1]}: {kind}" if head in ("hooks", "probes") else f"[{name}]"


def reference() -> str:
    """`gracerun help-config`: every table, in Markdown."""
    lines = ["# gracerun options", "",
             "Generated by `gracerun help-config` from the declarations in "
             "gracerun/config/settings.py and gracerun/config/plan.py; docs/configuration.md "
             "explains them. Flags win over gracerun.toml."]
    for name, block in blocks().items():
        lines += ["", f"## {_title(name)}", "", *block]
    return "\n".join(lines) + "\n"


def update(doc: str) -> str:
    """`doc` with every generated block rewritten; ValueError when a block is missing
    or a marker names none."""
    generated = blocks()
    seen = set()

    def fill(m: re.Match[str]) -> str:
        name = m.group(2)
        if name not in generated:
            raise ValueError(f"docs marker names no generated table: {name!r}")
        seen.add(name)
        return m.group(1) + "\n".join(generated[name]) + "\n" + m.group(4)

    out = _MARKED.sub(fill, doc)
    missing = [name for name in generated if name not in seen]
    if missing:
        raise ValueError(f"docs lack generated tables (add markers): {', '.join(missing)}")
    return out


def main(argv: list[str]) -> int:
    """--write [PATH]: rewrite the page; --check [PATH]: exit 1 when it is stale."""
    mode = argv[0] if argv else "--check"
    path = Path(argv[1]) if len(argv) > 1 else DOC
    if mode not in ("--write", "--check"):
        print(f"usage: {WRITE_COMMAND} | --check [PATH]", file=sys.stderr)
        return 2
    text = path.read_text()
    fresh = update(text)
    if mode == "--write":
        if fresh != text:
            path.write_text(fresh)
        return 0
    if fresh != text:
        print(f"{path} is out of date with the option declarations: run `{WRITE_COMMAND}`",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
