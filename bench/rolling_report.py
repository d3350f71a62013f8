"""What bench/rolling.py computes from one run, and how it shows many: tables and an SVG.

One run is one restart of the instance "s1" behind HAProxy under load.  Its
numbers (Outcome) come from three independent witnesses:

    HAProxy's log    one line per request it answered: server, status, termination
                     state.  A failure: a 5xx, no status, or a termination state
                     that names the server, HAProxy or a resource as the cause
                     (S, P, R, I, D, K); client aborts (C) at the end of the run are
                     not failures.
    the clients      wrk's totals (socket errors + non-2xx) and the recording
                     client's own failures.  "client only": failures of recorded
                     requests for which HAProxy logged no failure: HAProxy closed
                     the client's connection without a line (a backend that died
                     on a reused connection) or logged a success that never arrived.
    show stat        polled every POLL s: when HAProxy took s1 out of rotation
                     (DRAIN, MAINT or DOWN) and when it was back (UP).

The least possible time from SIGTERM to exit, for a shutdown that loses nothing:
the load balancer must stop sending (its detection time D), and what it sent
before must finish (L, the longest remaining time of a request in flight at s1
at SIGTERM), so least = D + L.  D is measured: SIGTERM to the first poll that
shows s1 out of rotation; when that never happened before the new instance was
up, D is the health checks' own detection time (inter x fall).
"""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from statistics import median
from typing import Any

from rolling_load import Record, WrkResult

BIN = 0.1  # seconds per point of the time series
STALL = 1.0  # a fast request (a few ms normally) that took this long was held up
SERVER_FAULTS = set("SPRIDK")  # first letter of a termination state that is not the client's

# The log-format rolling.py gives HAProxy: backend, server, status, termination
# state, total time, request URI (with the query string: the recording client's id).
LOG_FORMAT = "%b %s %ST %ts %Ta %HU"
_LINE = re.compile(r"^(?P<backend>\S+) (?P<server>\S+) (?P<status>-?\d+) (?P<ts>\S\S) "
                   r"(?P<ta>-?\d+) (?P<uri>\S*)$")
_ID = re.compile(r"[?&]id=(\d+)")


@dataclass(frozen=True, slots=True)
class LogLine:
    server: str
    status: int
    term: str  # termination state, e.g. "--", "SH", "CD"
    id: int | None  # the recording client's request id, if it sent it

    @property
    def failed(self) -> bool:
        return self.status >= 500 or self.status < 0 or self.term[0] in SERVER_FAULTS


def parse_log(text: str) -> list[LogLine]:
    """HAProxy's request lines (other lines, such as health-check events, are skipped)."""
    lines = []
    for raw in text.splitlines():
        m = _LINE.match(raw.strip())
        if m is None or m["backend"] in ("-",):
            continue
        ident = _ID.search(m["uri"])
        lines.append(LogLine(m["server"], int(m["status"]), m["ts"],
                             int(ident.group(1)) if ident else None))
    return lines


@dataclass(frozen=True)
class Outcome:
    """The numbers of one run (seconds are relative to the SIGTERM)."""

    wrapper: str
    scenario: str
    rep: int
    requests: int  # wrk's and the recording client's
    failed_log: int  # failures in HAProxy's log
    failed_client: int  # wrk's errors + non-2xx, and the recording client's failures
    client_only: int  # recorded failures HAProxy logged no failure for
    stalled: int  # recorded fast requests answered with success, but after STALL or more
    longest_stretch: float  # the longest wait of a client connection for a success
    to_exit: float  # SIGTERM -> the wrapper (or the service) exited
    killed: bool  # it had to be SIGKILLed at the stop timeout
    exit_code: int | None
    detection: float  # D
    detection_measured: bool
    in_flight: float  # L
    back: float | None  # SIGTERM -> s1 UP again with the new instance
    failures: dict[str, int]  # what failed, by kind ("wrk read", "log 503 sH", ...)
    series: list[int]  # successful recorded responses per BIN, from `series_from`
    series_from: float

    @property
    def least(self) -> float:
        return self.detection + self.in_flight

    @property
    def failed(self) -> int:
        return max(self.failed_log, self.failed_client)


def outcome(*, wrapper: str, scenario: str, rep: int, records: Sequence[Record],
            wrk: WrkResult | None, log: Sequence[LogLine], t_term: float, t_exit: float,
            killed: bool, exit_code: int | None, out_at: float | None, new_up: float,
            back_at: float | None, check_detection: float, window: tuple[float, float],
            server: str = "s1") -> Outcome:
    """Everything of one run from its raw material (times: time.monotonic())."""
    by_id = {line.id: line for line in log if line.id is not None}
    failures: dict[str, int] = {}
    for line in log:
        if line.failed:
            key = f"log {line.status} {line.term}"
            failures[key] = failures.get(key, 0) + 1
    failed_records = [r for r in records if not r.ok]
    for r in failed_records:
        key = f"client {r.error or r.status}"
        failures[key] = failures.get(key, 0) + 1
    if wrk is not None:
        for kind, count in wrk.errors.items():
            if count:
                failures[f"wrk {kind}"] = count
    client_only = sum(1 for r in failed_records
                      if r.id not in by_id or not by_id[r.id].failed)

    # L: requests HAProxy had sent to s1 that were still running at SIGTERM.
    in_flight = 0.0
    for r in records:
        logged = by_id.get(r.id)
        if logged is None or logged.server != server or r.start > t_term:
            continue
        if r.ok and r.end <= t_term:
            continue
        planned_end = r.start + r.slow_ms / 1000
        in_flight = max(in_flight, planned_end - t_term)

    measured = out_at is not None and out_at < new_up
    detection = (out_at - t_term) if measured and out_at is not None else check_detection

    stretch = 0.0
    for conn in sorted({r.conn for r in records if r.slow_ms == 0}):
        ends = sorted(r.end for r in records if r.conn == conn and r.ok
                      and window[0] <= r.end <= window[1])
        stretch = max([stretch, *(b - a for a, b in itertools.pairwise(ends))])

    start, stop = window
    bins = [0] * max(1, int((stop - start) / BIN))  # whole bins only: no partial last one
    for r in records:
        k = int((r.end - start) / BIN) if r.end >= start else -1
        if r.ok and 0 <= k < len(bins):
            bins[k] += 1

    return Outcome(
        wrapper=wrapper, scenario=scenario, rep=rep,
        requests=len(records) + (wrk.requests if wrk else 0),
        failed_log=sum(1 for line in log if line.failed),
        failed_client=len(failed_records) + (wrk.failed if wrk else 0),
        client_only=client_only,
        stalled=sum(1 for r in records if r.ok and r.slow_ms == 0 and r.end - r.start >= STALL),
        longest_stretch=stretch, to_exit=t_exit - t_term,
        killed=killed, exit_code=exit_code, detection=detection,
        detection_measured=measured, in_flight=in_flight,
        back=None if back_at is None else back_at - t_term, failures=failures,
        series=bins, series_from=start - t_term)


def to_json(o: Outcome) -> dict[str, Any]:
    return {**asdict(o), "least": o.least}


def from_json(raw: dict[str, Any]) -> Outcome:
    return Outcome(**{f.name: raw[f.name] for f in fields(Outcome)})


# ------------------------------------------------------------------- tables


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(outcomes: Sequence[Outcome], wrappers: Sequence[str], scenario: str) -> list[str]:
    """A markdown table of one scenario: a row per wrapper, medians over repetitions
    (counts: the median and, in brackets, the total over all runs)."""
    lines = [f"**{scenario}**", "",
             "| wrapper | runs | requests | failed: HAProxy log | failed: clients "
             f"| client only | answers ≥ {STALL:g} s | longest stretch | SIGTERM → exit "
             "| least possible | exit - least, worst run | back in rotation |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in wrappers:
        runs = [o for o in outcomes if o.wrapper == name and o.scenario == scenario]
        if not runs:
            continue
        killed = sum(o.killed for o in runs)
        exits = f"{median(o.to_exit for o in runs):.2f} s" + (
            f" ({killed} SIGKILLed)" if killed else "")
        over = max(o.to_exit - o.least for o in runs)
        backs = [o.back for o in runs if o.back is not None]
        lines.append(
            f"| {name} | {len(runs)} | {median(o.requests for o in runs):.0f} "
            f"| {_count(o.failed_log for o in runs)} | {_count(o.failed_client for o in runs)} "
            f"| {_count(o.client_only for o in runs)} | {_count(o.stalled for o in runs)} "
            f"| {median(o.longest_stretch for o in runs):.2f} s | {exits} "
            f"| {median(o.least for o in runs):.2f} s | {over:+.2f} s "
            f"| {fmt_s(median(backs)) + ' s' if backs else '-'} |")
    return lines


def summary(outcomes: Sequence[Outcome], wrappers: Sequence[str]) -> list[str]:
    """Every scenario together, a row per wrapper: how often and how much it failed,
    as counts and per 10,000 requests (the runs differ in length and traffic)."""
    lines = ["| wrapper | runs | runs with a failure | failed: HAProxy log | failed: clients "
             "| per 10,000 requests | answers ≥ 1 s | longest stretch (worst) "
             "| exit - least (worst) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in wrappers:
        runs = [o for o in outcomes if o.wrapper == name]
        if not runs:
            continue
        requests = sum(o.requests for o in runs)
        failed = sum(o.failed for o in runs)
        worst_over = max(o.to_exit - o.least for o in runs)
        lines.append(
            f"| {name} | {len(runs)} | {sum(1 for o in runs if o.failed)} "
            f"| {sum(o.failed_log for o in runs)} | {sum(o.failed_client for o in runs)} "
            f"| {failed / requests * 10_000:.1f} | {sum(o.stalled for o in runs)} "
            f"| {max(o.longest_stretch for o in runs):.2f} s | {worst_over:+.2f} s |")
    return lines


def _count(values: Iterable[int]) -> str:
    got = list(values)
    return f"{median(got):g} ({sum(got)})"


def failure_kinds(outcomes: Sequence[Outcome], wrappers: Sequence[str],
                  scenario: str) -> list[str]:
    """What the failures were, summed over the runs of a scenario, per wrapper."""
    lines = []
    for name in wrappers:
        total: dict[str, int] = {}
        for o in outcomes:
            if o.wrapper == name and o.scenario == scenario:
                for kind, count in o.failures.items():
                    total[kind] = total.get(kind, 0) + count
        if total:
            lines.append(f"  {name}: " + ", ".join(f"{k} x{v}" for k, v in sorted(total.items())))
    return lines


# ---------------------------------------------------------------------- SVG

COLOURS = ("#4e79a7", "#f28e2b", "#76b7b2", "#e15759", "#59a14f", "#b07aa1", "#9c755f")
PANEL_W, PANEL_H, MARGIN = 470, 210, 46


def svg(outcomes: Sequence[Outcome], wrappers: Sequence[str], scenarios: Sequence[str],
        until: float, title: str) -> str:
    """Successful responses per second over time, SIGTERM at 0: one panel per
    scenario, one line per wrapper (the mean over repetitions, 100 ms bins)."""
    cols = 2 if len(scenarios) > 1 else 1
    rows = -(-len(scenarios) // cols)
    legend_h = 22 * (-(-len(wrappers) // 3))
    width = cols * (PANEL_W + MARGIN) + MARGIN
    height = 40 + rows * (PANEL_H + 2 * MARGIN) + legend_h
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{MARGIN}" y="22" font-size="14">{html.escape(title)}</text>']
    series: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        series.setdefault((o.wrapper, o.scenario), []).append(o)
    start = min((o.series_from for o in outcomes), default=-1.0)
    peak = 1.0
    means: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for key, runs in series.items():
        points = []
        n_bins = min(len(o.series) for o in runs)
        for i in range(n_bins):
            t = runs[0].series_from + (i + 0.5) * BIN
            if t > until:
                break
            rate = sum(o.series[i] for o in runs) / len(runs) / BIN
            points.append((t, rate))
            peak = max(peak, rate)
        means[key] = points
    peak = _nice(peak * 1.1)
    for k, scenario in enumerate(scenarios):
        x0 = MARGIN + (k % cols) * (PANEL_W + MARGIN)
        y0 = 40 + (k // cols) * (PANEL_H + 2 * MARGIN) + 10

        def px(t: float, x0: float = x0) -> float:
            return x0 + (t - start) / (until - start) * PANEL_W

        def py(v: float, y0: float = y0) -> float:
            return y0 + PANEL_H - v / peak * PANEL_H

        out.append(f'<text x="{x0}" y="{y0 - 4}" font-size="12">{html.escape(scenario)}</text>')
        out.append(f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" '
                   f'fill="none" stroke="#999"/>')
        for v in (0, peak / 2, peak):
            out.append(f'<text x="{x0 - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        t = float(int(start))
        while t <= until:
            out.append(f'<line x1="{px(t):.1f}" y1="{y0 + PANEL_H}" x2="{px(t):.1f}" '
                       f'y2="{y0 + PANEL_H + 4}" stroke="#999"/>')
            out.append(f'<text x="{px(t):.1f}" y="{y0 + PANEL_H + 15}" '
                       f'text-anchor="middle">{t:g}</text>')
            t += 1.0 if until - start <= 12 else 2.0
        out.append(f'<line x1="{px(0):.1f}" y1="{y0}" x2="{px(0):.1f}" y2="{y0 + PANEL_H}" '
                   f'stroke="#d62728" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{px(0) + 3:.1f}" y="{y0 + 11}" fill="#d62728">SIGTERM</text>')
        out.append(f'<text x="{x0 + PANEL_W / 2}" y="{y0 + PANEL_H + 30}" '
                   f'text-anchor="middle">seconds since SIGTERM</text>')
        out.append(f'<text x="{x0 - 34}" y="{y0 + PANEL_H / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 {x0 - 34} {y0 + PANEL_H / 2})">'
                   f'successful responses/s</text>')
        for w, name in enumerate(wrappers):
            line = means.get((name, scenario))
            if not line:
                continue
            path = " ".join(f"{px(t):.1f},{py(v):.1f}" for t, v in line)
            out.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS[w % 7]}" '
                       f'stroke-width="1.5" opacity="0.85"/>')
    ly = height - legend_h + 4
    for w, name in enumerate(wrappers):
        lx = MARGIN + (w % 3) * 300
        y = ly + 22 * (w // 3)
        out.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 24}" y2="{y}" '
                   f'stroke="{COLOURS[w % 7]}" stroke-width="3"/>')
        out.append(f'<text x="{lx + 30}" y="{y + 4}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _nice(value: float) -> float:
    """The next of 1, 2, 5 x 10^k at or above value."""
    scale = 1.0
    while scale * 10 < value:
        scale *= 10
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale
