"""The tables bench.py prints, its statistics, and gracerun's targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

Samples = dict[str, dict[str, list[float | None]]]  # metric -> wrapper -> samples

# What gracerun aims for (see docs/benchmarks.md).
TARGET_STARTUP_MS = 40.0  # median overhead over bare
TARGET_RSS_MB = 20.0  # median VmRSS, idle
TARGET_SIGNAL_P95_MS = 1.0  # SIGUSR1 forwarding, p95
TARGET_REAP_MS = 1000.0  # 2,000 orphans, every run
TARGET_WAKEUPS = 1  # context switches per idle window, median

# The standalone build against the pip install (docs/standalone.md).
STANDALONE = "gracerun (standalone)"
TARGET_STANDALONE_MB = 25.0  # the whole directory, on disk
TARGET_STANDALONE_STARTUP_RATIO = 1.2  # its start-up over bare / the pip install's


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n*q/100), at least 1
    return ordered[int(rank) - 1]


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    unit: str
    digits: int = 2
    vs_bare: bool = True
    note: str = ""


TABLES = (
    Table("startup_ms", "Start-up: WRAPPER /bin/true, spawn to exit status", "ms", 1),
    Table("startup_cpu_ms", "Start-up: CPU time (user+sys) of the same runs", "ms", 1,
          note="rusage of the wrapper and the /bin/true it reaped; moves less with load"),
    Table("rss_mb", "Idle RSS of the wrapper (VmRSS; RssAnon in the JSON)", "MB", 1,
          vs_bare=False, note="bare: no wrapper process"),
    Table("rss_pid1_mb", "Idle RSS as PID 1 of a PID namespace (VmRSS), as in a container",
          "MB", 1, vs_bare=False, note="not PID 1 (above), gracerun also loads ctypes"),
    Table("sigusr1_ms", "Signal forwarding: SIGUSR1 to the wrapper -> service handler", "ms",
          3, note="SIGUSR1 for the repeated samples: SIGTERM ends the service"),
    Table("sigterm_ms", "Signal forwarding: SIGTERM (one per instance) -> service handler",
          "ms", 3, note="gracerun: SIGTERM is the shutdown trigger; the service gets the "
                        "stop signal"),
    Table("sigterm_to_exit_ms", "Stop: SIGTERM to the wrapper -> wrapper exited", "ms", 2),
    Table("reap_ms", "Reaping: orphans released -> none left (wrapper is PID 1 of a PID ns)",
          "ms", 1, note="bare: the service is PID 1 and reaps nothing"),
    Table("reap_cpu_ms", "Reaping: CPU time of PID 1 over the same window", "ms", 1,
          note="the wrapper's own cost; the wall time above is mostly the kernel's"),
    Table("idle_voluntary_switches", "Idle wake-ups: voluntary context switches per window",
          "", 0, vs_bare=False, note="bare: the sleeping service itself, the method's floor"),
)


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(samples: Samples, names: Sequence[str], notes: dict[str, str]) -> str:
    """One table per metric: a row per wrapper (in `names` order), median, p95, max."""
    width = max(len(name) for name in names) + 2
    lines: list[str] = []
    for table in TABLES:
        rows = samples.get(table.key, {})
        if not rows:
            continue
        unit = f" [{table.unit}]" if table.unit else ""
        n = "/".join(str(c) for c in sorted({len(v) for v in rows.values()}))
        lines += ["", f"{table.title}{unit}, n={n}"]
        if table.note:
            lines.append(f"  ({table.note})")
        lines.append(f"  {'wrapper':<{width}}{'median':>10}{'p95':>10}{'max':>10}"
                     + (f"{'vs bare':>11}" if table.vs_bare else ""))
        base = [v for v in rows.get("bare", []) if v is not None]
        base_median = median(base) if base else None
        for name in names:
            values = rows.get(name)
            if values is None:
                if name == "bare":
                    lines.append(f"  {name:<{width}}{'n/a':>10}")
                continue
            got = [v for v in values if v is not None]
            missing = len(values) - len(got)
            if not got:
                lines.append(f"  {name:<{width}}{'n/a':>10}  "
                             + reap_note(samples, name, len(values), missing))
                continue
            med = median(got)
            row = (f"  {name:<{width}}{fmt(med, table.digits):>10}"
                   f"{fmt(percentile(got, 95), table.digits):>10}"
                   f"{fmt(max(got), table.digits):>10}")
            if table.vs_bare and base_median is not None and name != "bare":
                row += f"{med - base_median:>+11.{table.digits}f}"
            if missing:
                row += "  " + reap_note(samples, name, len(values), missing)
            lines.append(row)
    lines.append("")
    lines += [f"{k}: {v}" for k, v in sorted(notes.items())]
    return "\n".join(lines)


def reap_note(samples: Samples, name: str, runs: int, missing: int) -> str:
    left = [v for v in samples.get("orphans_left", {}).get(name, []) if v is not None]
    exits = [v for v in samples.get("orphans_exit_ms", {}).get(name, []) if v is not None]
    text = f"not reaped in {missing} of {runs} runs ({max(left, default=0):.0f} zombies left)"
    if exits:
        text += f"; all orphans had exited {median(exits):.1f} ms after release (median)"
    return text


def targets(samples: Samples, orphans: int) -> list[dict[str, Any]]:
    """gracerun against its targets: what was measured and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(label: str, value: float | None, limit: float, cmp: str) -> None:
        met = value is not None and (value < limit if cmp == "<" else value <= limit)
        out.append({"target": f"{label} {cmp} {limit:g}", "measured": value, "met": met})

    def values(key: str, name: str = "gracerun") -> list[float]:
        return [v for v in samples.get(key, {}).get(name, []) if v is not None]

    startup, bare = values("startup_ms"), values("startup_ms", "bare")
    if startup and bare:
        add("start-up overhead vs bare, median ms", round(median(startup) - median(bare), 1),
            TARGET_STARTUP_MS, "<=")
    if values("rss_mb"):
        add("idle VmRSS, median MB", round(median(values("rss_mb")), 1), TARGET_RSS_MB, "<=")
    if values("sigusr1_ms"):
        add("SIGUSR1 forwarding p95 ms", round(percentile(values("sigusr1_ms"), 95), 3),
            TARGET_SIGNAL_P95_MS, "<")
    reaps = samples.get("reap_ms", {}).get("gracerun")
    if reaps:
        worst = None if None in reaps else round(max(v for v in reaps if v is not None), 1)
        add(f"reap {orphans:,} orphans, worst run ms", worst, TARGET_REAP_MS, "<=")
    if values("idle_voluntary_switches"):
        add("idle voluntary context switches, median", median(values("idle_voluntary_switches")),
            TARGET_WAKEUPS, "<=")
    return out


def standalone_targets(samples: Samples, sizes: dict[str, float]) -> list[dict[str, Any]]:
    """The standalone build against its targets, each beside the pip install's figure."""
    out: list[dict[str, Any]] = []

    def values(key: str, name: str) -> list[float]:
        return [v for v in samples.get(key, {}).get(name, []) if v is not None]

    def add(label: str, value: float | None, limit: float, reference: str = "") -> None:
        met = value is not None and value <= limit
        out.append({"target": f"standalone: {label} <= {limit:g}{reference}", "measured": value,
                    "met": met})

    size = next((mb for name, mb in sizes.items() if name.startswith(STANDALONE)), None)
    add("size on disk, MB", None if size is None else round(size, 1), TARGET_STANDALONE_MB)
    bare, pip, own = (values("startup_ms", n) for n in ("bare", "gracerun", STANDALONE))
    if bare and pip and own:
        over_bare = median(own) - median(bare)
        pip_over_bare = median(pip) - median(bare)
        add("start-up over bare / the pip install's, medians",
            round(over_bare / pip_over_bare, 2), TARGET_STANDALONE_STARTUP_RATIO,
            f" (standalone +{over_bare:.1f} ms, pip install +{pip_over_bare:.1f} ms)")
    for key, what in (("rss_mb", "idle VmRSS"), ("rss_pid1_mb", "idle VmRSS as PID 1")):
        pip_rss, own_rss = values(key, "gracerun"), values(key, STANDALONE)
        if pip_rss and own_rss:
            add(f"{what}, median MB", round(median(own_rss), 1), round(median(pip_rss), 1),
                " (the pip install's)")
    return out
