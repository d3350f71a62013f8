"""scripts/demo's run: the rolling restart of bench/rolling.py, once with a plain wrapper
and once with gracerun, on the example app, its work queue included.

    python3 bench/rolling.py --demo [--gracerun PATH]

HAProxy on loopback over two instances of examples/app.py ("s1", "s2"), both consuming
one local work queue that a producer fills at a steady rate; wrk and the recording
client (with 1.5 s requests among the fast ones) send load through HAProxy; s1 is
restarted, first under the plain wrapper (tini, else dumb-init, else none), then
under `gracerun --config examples/haproxy.toml`.  Printed: the two restarts side by
side, the queue's ledger (every item produced was finished once or is still queued;
none taken and dropped), and gracerun's timeline of its restart (`gracerun report`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import rolling_report as report
from procs import BenchError, Processes, become_subreaper
from rolling import (
    APP,
    HOOKS_CONFIG,
    RunContext,
    Scenario,
    Settings,
    Wrapper,
    run_once,
)

ITEM_MS = 300  # work per queue item
ITEMS_PER_S = 5.0  # the producer's rate: below what two consumers finish, so the queue stays short


class Producer:
    """Writes item files into the queue at a steady rate until stop()."""

    def __init__(self, queue: Path, rate: float) -> None:
        self.queue, self.period = queue, 1 / rate
        self.produced: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def start(self) -> None:
        self.queue.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            name = f"item-{len(self.produced):05d}"
            # Written under a "." name, then renamed: a consumer never sees half an item.
            (self.queue / f".{name}").write_text(f"payload {len(self.produced)}\n")
            os.rename(self.queue / f".{name}", self.queue / name)
            self.produced.append(name)


@dataclass(frozen=True)
class Ledger:
    produced: int
    finished: int  # distinct items finished
    twice: int  # items finished more than once (must be 0)
    queued: int  # still waiting in the queue
    lost: list[str]  # taken and never finished

    @property
    def accounted(self) -> bool:
        return (not self.lost and not self.twice
                and self.finished + self.queued == self.produced)


def read_ledger(path: Path, queue: Path, produced: list[str]) -> Ledger:
    taken: set[str] = set()
    finished: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines():
            event, item, _pid = line.split()
            (finished.append if event == "finished" else taken.add)(item)
    queued = [p.name for p in queue.iterdir() if p.is_file() and not p.name.startswith(".")]
    return Ledger(len(produced), len(set(finished)), len(finished) - len(set(finished)),
                  len(queued), sorted(taken - set(finished)))


def plain_wrapper() -> Wrapper:
    for name, path, args in (("tini", "/usr/bin/tini", ("--",)),
                             ("dumb-init", "/usr/bin/dumb-init", ())):
        if os.access(path, os.X_OK):
            return Wrapper(f"plain wrapper ({name})", (path, *args))
    return Wrapper("no wrapper", ())


def demo(args: argparse.Namespace, haproxy: str, gracerun: str) -> int:
    s: Settings = args.settings
    s.pre, s.post = 2.0, 1.5
    wrappers = [plain_wrapper(),
                Wrapper("gracerun + haproxy hooks",
                        (gracerun, "--config", str(HOOKS_CONFIG), "--"), deregisters=True)]
    scenario = Scenario("examples/app.py, with 1.5 s requests", "graceful", 1500)
    env = {k: v for k, v in os.environ.items() if k != "GRACERUN_CONFIG"}
    procs = Processes(env)
    tmp = Path(tempfile.mkdtemp(prefix="gracerun-demo-"))
    queue, book = tmp / "queue", tmp / "ledger"

    def service(_scenario: Scenario, port: int) -> list[str]:
        return [sys.executable, str(APP), "--port", str(port), "--queue", str(queue),
                "--ledger", str(book), "--item-ms", str(ITEM_MS)]

    print(f"HAProxy on loopback over two instances of examples/app.py; load: wrk and a client "
          f"that also sends 1.5 s requests; a producer adds {ITEMS_PER_S:g} work-queue items "
          "a second.  Restarting instance s1 under each wrapper in turn...")
    outcomes: list[report.Outcome] = []
    ledgers: list[Ledger] = []
    rundirs: list[Path] = []
    try:
        become_subreaper()
        ctx = RunContext(procs, haproxy, s, tmp, env, service, graceful_teardown=True)
        for n, wrapper in enumerate(wrappers, 1):
            shutil.rmtree(queue, ignore_errors=True)
            book.unlink(missing_ok=True)
            producer = Producer(queue, ITEMS_PER_S)
            producer.start()
            try:
                outcome, rundir = run_once(ctx, wrapper, scenario, 0, n)
            finally:
                producer.stop()
            outcomes.append(outcome)
            ledgers.append(read_ledger(book, queue, producer.produced))
            rundirs.append(rundir)
            print(f"  {n}/{len(wrappers)} {wrapper.name}: done")
    except BenchError as exc:
        sys.stderr.write(f"demo: {exc}\n(logs kept in {tmp})\n")
        return 1
    finally:
        procs.cleanup()

    print()
    print(side_by_side(outcomes, ledgers))
    print("""
Under the plain wrapper, s1 stopped accepting at its SIGTERM while HAProxy went on
sending it requests until two health checks had failed: those requests waited in
HAProxy's connection retries (one a second) or failed.  Under gracerun, HAProxy
stopped choosing s1 first (the haproxy hook set it to DRAIN), the requests it had
already sent finished (drain), and only then did the app get its SIGTERM.  Its work
queue consumer stopped at the notify (SIGUSR1), finishing the item in hand: the
ledger's count of lost items is above.""")
    state = rundirs[-1] / "restart-shutdown.json"
    print(f"\nThe restart under gracerun, as it recorded it (gracerun report {state.name}):\n")
    sys.stdout.flush()
    subprocess.run([gracerun, "report", str(state)], check=False, timeout=30)
    print(f"\nThe runs' files (HAProxy's config and log, each instance's log): {tmp}")
    ok = all(ledger.accounted for ledger in ledgers) and outcomes[-1].failed == 0
    return 0 if ok else 1


def side_by_side(outcomes: list[report.Outcome], ledgers: list[Ledger]) -> str:
    rows: list[tuple[str, list[str]]] = [
        ("requests sent through HAProxy", [f"{o.requests}" for o in outcomes]),
        ("failed, in HAProxy's log", [f"{o.failed_log}" for o in outcomes]),
        ("failed, as the clients saw it", [f"{o.failed_client}" for o in outcomes]),
        (f"answers that took {report.STALL:g} s or more", [f"{o.stalled}" for o in outcomes]),
        ("longest wait of a client for an answer",
         [f"{o.longest_stretch:.2f} s" for o in outcomes]),
        ("SIGTERM to exit of the old s1", [f"{o.to_exit:.2f} s" for o in outcomes]),
        ("work items produced / finished / queued",
         [f"{lg.produced} / {lg.finished} / {lg.queued}" for lg in ledgers]),
        ("work items lost (taken, never finished)",
         [f"{len(lg.lost)}" + (f" {lg.lost[:3]}" if lg.lost else "") for lg in ledgers]),
    ]
    names = [o.wrapper for o in outcomes]
    first = max(len(label) for label, _ in rows) + 2
    width = max(len(n) for n in names) + 2
    lines = [" " * first + "".join(f"{n:>{width}}" for n in names)]
    lines += [f"{label:<{first}}" + "".join(f"{v:>{width}}" for v in values)
              for label, values in rows]
    for o in outcomes:
        if o.failures:
            kinds = ", ".join(f"{k} x{v}" for k, v in sorted(o.failures.items()))
            lines.append(f"  {o.wrapper}: {kinds}")
    return "\n".join(lines)
