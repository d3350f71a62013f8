"""`gracerun report STATE_FILE`: a recorded shutdown, drawn for a person.

    gracerun report /var/lib/gracerun/last.json              text Gantt chart
    gracerun report last.json --format svg --output s.svg    the same as SVG

Both formats draw the same picture: one bar per phase against the budget,
each phase's hooks beneath it (failed and timed-out ones marked), the budget
end, and the SIGKILL when the budget ran out.  The SVG is written by hand (no
dependencies), a few dozen elements a reader can open in any browser.

The file may come from anywhere: state.load() checks every field's type and
range and hands over strings already scrubbed (URLs redacted, control
characters escaped), so neither a terminal nor an SVG viewer gets markup or
escape sequences from it; a file that fails the checks is one error line.
"""

from __future__ import annotations

import argparse
import datetime
import html
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

from gracerun.errors import GracerunError, UsageError
from gracerun.observe import redact, state

CHART_COLUMNS = 50
PHASE_COLOURS = {"notify": "#4e79a7", "deregister": "#76b7b2", "propagate": "#f28e2b",
                 "drain": "#59a14f", "stop": "#edc948", "kill": "#e15759"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"report: {message} (see 'gracerun report --help')")


def main(argv: list[str]) -> int:
    parser = _Parser(prog="gracerun report",
                     description="Draw a shutdown recorded in gracerun's state file "
                                 "(state.file) as a text Gantt chart or an SVG.")
    parser.add_argument("state_file", metavar="STATE_FILE")
    parser.add_argument("--format", choices=("text", "svg"), default="text")
    parser.add_argument("--output", "-o", metavar="FILE", help="write here, not to stdout")
    ns = parser.parse_args(argv)
    where = redact.text(ns.state_file)
    try:
        data = state.load(ns.state_file)
    except FileNotFoundError:
        raise UsageError(f"report: {where}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"report: {where}: is a directory") from None
    except OSError as exc:
        raise GracerunError(f"report: {where}: {exc.strerror or exc}") from None
    except state.StateFileError as exc:
        raise GracerunError(f"report: {where}: not a gracerun state file: {exc}") from None
    shutdown = Shutdown.from_record(data)
    out = render_svg(shutdown) if ns.format == "svg" else render_text(shutdown)
    if ns.output:
        try:
            with open(ns.output, "w", encoding="utf-8") as fh:
                fh.write(out)
        except OSError as exc:
            raise GracerunError(f"report: cannot write {ns.output}: {exc.strerror or exc}"
                                ) from None
    else:
        sys.stdout.write(out)
    return 0


# ------------------------------------------------------------------ the model


@dataclass(frozen=True)
class Bar:
    name: str
    start: float
    duration: float
    outcome: str = "ok"  # hooks: ok, failed, timeout
    detail: str = ""
    kind: str = ""


@dataclass(frozen=True)
class Shutdown:
    trigger: str
    started_at: float | None
    budget: float
    duration: float
    exit_code: int | None
    service_exit_code: int | None
    killed: bool
    phases: list[tuple[Bar, list[Bar]]]  # each phase with its hooks

    @property
    def scale(self) -> float:
        """Seconds the chart spans: the budget, or longer when the shutdown overran it.

        The few milliseconds between the SIGKILL and the tree's end do not count
        as overrunning: the chart keeps the budget's round tick marks.
        """
        if self.duration <= self.budget * 1.02:
            return max(self.budget, 1e-3)
        return self.duration

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Shutdown:
        """From a record as state.load() returns it (checked, strings scrubbed)."""
        safe = redact.scrub  # again: a record built elsewhere gets the same treatment
        phases = []
        for p in r["phases"]:
            bar = Bar(safe(p["name"]), float(p["start"]), float(p.get("duration") or 0.0),
                      detail=safe(p.get("reason", "")))
            hooks = [Bar(safe(h["name"]), float(h["start"]), float(h["duration"]),
                         safe(h["outcome"]), safe(h.get("detail", "")), safe(h.get("kind", "")))
                     for h in r["hooks"] if h["phase"] == p["name"]]
            phases.append((bar, hooks))
        return cls(trigger=safe(r.get("trigger", "")), started_at=r.get("started_at"),
                   budget=float(r["budget_seconds"]), duration=float(r["duration_seconds"]),
                   exit_code=r.get("exit_code"), service_exit_code=r.get("service_exit_code"),
                   killed=bool(r["killed"]), phases=phases)

    def headline(self) -> str:
        when = ""
        if self.started_at is not None:
            moment = datetime.datetime.fromtimestamp(self.started_at, datetime.UTC)
            when = f" at {moment:%Y-%m-%d %H:%M:%S} UTC"
        trigger = f", trigger: {self.trigger}" if self.trigger else ""
        return f"shutdown{when}{trigger}"

    def verdict(self) -> str:
        code = f"exit code {self.exit_code}"
        if self.service_exit_code is not None and self.service_exit_code != self.exit_code:
            code += f" (service {self.service_exit_code})"
        if self.killed:
            return (f"took {seconds(self.duration)} of a {seconds(self.budget)} budget: "
                    f"budget spent, SIGKILL sent to the whole tree; {code}")
        spare = max(0.0, self.budget - self.duration)
        return (f"took {seconds(self.duration)} of a {seconds(self.budget)} budget "
                f"({seconds(spare)} to spare); {code}")


def seconds(value: float) -> str:
    if value < 10:
        return f"{value:.3f}s"
    if value < 100:
        return f"{value:.2f}s"
    return f"{value:.1f}s"


def _tick(value: float) -> str:
    return f"{value:.3g}s"


# ------------------------------------------------------------------- text


def render_text(s: Shutdown, columns: int = CHART_COLUMNS) -> str:
    rows: list[tuple[str, float, Bar, str]] = []  # (label, seconds, bar, note)
    for phase, hooks in s.phases:
        note = "SIGKILL sent to the whole tree" if phase.name == "kill" else ""
        rows.append((phase.name, phase.duration, phase, note))
        for hook in hooks:
            note = "" if hook.outcome == "ok" else f"{hook.outcome.upper()}: {hook.detail}"
            rows.append((f"  {hook.name}", hook.duration, hook, note))
    width = max([len(label) for label, *_ in rows] + [5])
    pad = " " * (width + 12)

    def col(t: float) -> int:
        return min(columns, round(t / s.scale * columns))

    # The axis: ticks at quarters of the span, the budget end marked with B.
    axis = ["─"] * (columns + 1)
    labels = [" "] * (columns + 8)
    for i in range(5):
        c = round(i * columns / 4)
        axis[c] = "┼"
        text = _tick(s.scale * i / 4)
        start = max(0, min(c - len(text) // 2, len(labels) - len(text)))
        if all(ch == " " for ch in labels[max(0, start - 1):start + len(text)]):
            labels[start:start + len(text)] = text
    budget_col = col(s.budget)
    axis[budget_col] = "┤" if budget_col == columns else "B"
    lines = [s.headline(), "", pad + "".join(labels).rstrip(),
             pad + "".join(axis) + (" budget" if budget_col == columns else " (B: budget)")]
    for label, secs, bar, note in rows:
        first = col(bar.start)
        last = max(first + 1, col(bar.start + bar.duration))
        fill = "█" if bar.kind == "" else ("▒" if bar.outcome == "ok" else "x")
        chart = " " * first + fill * (last - first)
        chart = chart.ljust(columns + 1)
        if budget_col < columns and chart[budget_col] == " ":
            chart = chart[:budget_col] + "¦" + chart[budget_col + 1:]
        line = f"{label:<{width}} {seconds(secs):>9}  {chart}"
        lines.append((line.rstrip() + ("  " + note if note else "")).rstrip())
    lines += ["", s.verdict(), ""]
    return "\n".join(lines)


# -------------------------------------------------------------------- svg

_ROW = 24
_LABEL_WIDTH = 230
_CHART_WIDTH = 600
_TOP = 70


def render_svg(s: Shutdown) -> str:
    rows: list[tuple[Bar, bool]] = []  # (bar, is_hook)
    for phase, hooks in s.phases:
        rows.append((phase, False))
        rows += [(hook, True) for hook in hooks]
    height = _TOP + len(rows) * _ROW + 60
    width = _LABEL_WIDTH + _CHART_WIDTH + 280

    def x(t: float) -> float:
        return _LABEL_WIDTH + t / s.scale * _CHART_WIDTH

    esc = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="ui-monospace, Menlo, Consolas, '
           f'monospace" font-size="13">',
           f"<title>gracerun {esc(s.headline())}</title>",
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="10" y="22" font-size="15" font-weight="bold">{esc(s.headline())}</text>']
    axis_y = _TOP - 12
    out.append(f'<line x1="{x(0):.1f}" y1="{axis_y}" x2="{x(s.scale):.1f}" y2="{axis_y}" '
               f'stroke="#444"/>')
    for i in range(5):
        t = s.scale * i / 4
        out.append(f'<line x1="{x(t):.1f}" y1="{axis_y - 4}" x2="{x(t):.1f}" '
                   f'y2="{_TOP + len(rows) * _ROW}" stroke="#ddd"/>')
        out.append(f'<text x="{x(t):.1f}" y="{axis_y - 8}" text-anchor="middle" '
                   f'fill="#444">{_tick(t)}</text>')
    for i, (bar, is_hook) in enumerate(rows):
        y = _TOP + i * _ROW
        weight = "normal" if is_hook else "bold"
        out.append(f'<text x="{20 if is_hook else 10}" y="{y + 16}" font-weight="{weight}">'
                   f"{esc(bar.name)}</text>")
        out.append(f'<text x="{_LABEL_WIDTH - 10}" y="{y + 16}" text-anchor="end" '
                   f'fill="#444">{seconds(bar.duration)}</text>')
        colour = PHASE_COLOURS.get(bar.name, "#9c755f")
        if is_hook:
            colour = "#bab0ac" if bar.outcome == "ok" else "#e15759"
        w = max(2.0, x(bar.start + bar.duration) - x(bar.start))
        h = 10 if is_hook else 16
        tip = f"{bar.name}: {seconds(bar.duration)} from {seconds(bar.start)}"
        if bar.detail:
            tip += f" ({bar.detail})"
        out.append(f'<rect x="{x(bar.start):.1f}" y="{y + (_ROW - h) / 2:.1f}" '
                   f'width="{w:.1f}" height="{h}" rx="2" fill="{colour}">'
                   f"<title>{esc(tip)}</title></rect>")
        note = ""
        if is_hook and bar.outcome != "ok":
            note = f"{bar.outcome}: {bar.detail}"
        elif bar.name == "kill":
            note = "SIGKILL sent to the whole tree"
        if note:
            out.append(f'<text x="{x(bar.start + bar.duration) + 6:.1f}" y="{y + 16}" '
                       f'fill="#c0392b">{esc(note[:60])}</text>')
    bottom = _TOP + len(rows) * _ROW
    bx = x(s.budget)
    out.append(f'<line x1="{bx:.1f}" y1="{axis_y}" x2="{bx:.1f}" y2="{bottom + 6}" '
               f'stroke="#c0392b" stroke-width="2" stroke-dasharray="6 4"/>')
    out.append(f'<text x="{bx + 4:.1f}" y="{axis_y + 14}" fill="#c0392b">budget '
               f'{_tick(s.budget)}</text>')
    out.append(f'<text x="10" y="{bottom + 36}">{esc(s.verdict())}</text>')
    out.append("</svg>\n")
    return "\n".join(out)
