"""Where every planned run of a table stands: finished, running, failed or missing.

Reads the scale's pool only (`results/runs/<scale>/ensembles/<key>/`), with the plans of
`hightpr.tables` (the same runs `make table-...` would train). A run is

- **finished**: its ensemble `metrics.json` holds the scale's members;
- **running**: a process holds the OS lock (`run.lock`, see `hightpr.runs.RunLock`) of the
  ensemble or of one of its members; the lock dies with its process, so a crash never looks
  like a run under way;
- **failed**: its folder exists, nothing holds its lock, and it is not finished (an error, a
  kill, a time-out): the first error line of its log when one is found, and the log's path;
- **missing**: no folder yet;
- **unavailable**: the cell cannot run here (private data); such cells have no run.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hightpr import runs
from hightpr.ensemble import finished_members
from hightpr.tables.cells import Cell, Plan
from hightpr.tables.results import ensemble_metrics, ensemble_path, resolve
from hightpr.tables.runner import Context, table_plans
from hightpr.tables.specs import TableSpec

STATES = ("finished", "running", "partial", "failed", "missing", "unavailable")
ERROR_LINE = re.compile(r"^error:|\b\w*(Error|Exception|Interrupt)\b[:(]|\bKilled\b|CUDA out of memory")


@dataclass
class RunState:
    """One planned run (an ensemble) of a table at a scale, and where it stands."""

    table: str
    scale: str
    cell: Cell
    state: str                       # one of STATES
    key: str | None = None           # the ensemble key (None: unavailable)
    path: Path | None = None         # the ensemble folder
    members: int = 0                 # the scale's ensemble size
    done: int = 0                    # members finished
    detail: str = ""                 # owner of a live lock, first error line, why unavailable
    log: Path | None = None          # the log that says why it failed (or its training log)
    stage: str = ""                  # the grid step it belongs to ('' = the cell's final run)
    values: tuple = ()               # the grid point
    provisional: bool = False        # depends on a grid step not decided yet
    overrides: tuple[str, ...] = field(default_factory=tuple)
    plan: Plan | None = field(default=None, repr=False)

    @property
    def line(self) -> str:
        """One line for a terminal: `cell  state  key [grid point] detail`."""
        what = self.key or ""
        if self.stage:
            what += f" [{self.stage}: " + ", ".join(f"{k}={v}" for k, v in self.values) + "]"
        if self.provisional:
            what += " (after selection)"
        state = self.state + (f" {self.done}/{self.members}" if self.state in ("running", "partial", "failed")
                              else "")
        extra = f"  {self.detail}" if self.detail else ""
        extra += f" (log {self.log})" if self.log else ""
        return f"{state:<12} {what}{extra}"


# -- locks -------------------------------------------------------------------------------------
def _proc_locks() -> set[tuple[int, int]] | None:
    """(device, inode) of every file with a lock held on this machine (Linux /proc/locks), or None."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    held = set()
    for line in text.splitlines():
        parts = line.split()
        where = next((p for p in parts if p.count(":") == 2), None)
        if where is None:
            continue
        major, minor, inode = where.split(":")
        try:
            held.add((os.makedev(int(major, 16), int(minor, 16)), int(inode)))
        except ValueError:
            continue
    return held


def lock_holder(path: Path, held: set[tuple[int, int]] | None = None) -> str | None:
    """The owner line of a `run.lock` that a live process holds; None when free or absent.

    Looked up in /proc/locks where there is one (nothing is locked, so a trainer is never
    delayed); elsewhere probed with a shared non-blocking `flock`, released at once.
    """
    try:
        st = Path(path).stat()
    except OSError:
        return None
    owner = _owner(path)
    if held is not None:
        return owner if (st.st_dev, st.st_ino) in held else None
    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return owner
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def _owner(path: Path) -> str:
    try:
        return Path(path).read_text().strip() or "another process"
    except OSError:
        return "another process"


# -- logs --------------------------------------------------------------------------------------
def _hydra_logs(pool: Path) -> dict[str, list[Path]]:
    """{ensemble key: its Hydra job logs} from the launcher's job folders under the pool."""
    out: dict[str, list[Path]] = {}
    for sub in ("runs", "multirun"):
        root = Path(pool) / sub
        if not root.is_dir():
            continue
        for overrides in root.glob("**/.hydra/overrides.yaml"):
            try:
                text = overrides.read_text()
            except OSError:
                continue
            found = re.search(r"ensemble\.key=([\w.@=-]+)", text)
            if found:
                out.setdefault(found.group(1), []).extend(sorted(overrides.parent.parent.glob("*.log")))
    return out


def first_error(log: Path) -> str | None:
    """The first line of a log that reports an error (`error: ...`, `ValueError: ...`), else None."""
    try:
        with open(log, errors="replace") as handle:
            for line in handle:
                if ERROR_LINE.search(line):
                    return line.strip()[:300]
    except OSError:
        return None
    return None


def last_epoch(run_dir: Path) -> int | None:
    """The last epoch a run's CSV log recorded (its progress), or None."""
    path = runs.csv_log_path(Path(run_dir))
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4096))
            lines = handle.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        head = line.split(",", 1)[0]
        if head.isdigit():
            return int(head)
    return None


# -- states ------------------------------------------------------------------------------------
class PoolReader:
    """Reads one pool's run folders, locks and logs once for every table of a scale."""

    def __init__(self, pool: Path) -> None:
        self.pool = Path(pool)
        self.held = _proc_locks()
        self._logs: dict[str, list[Path]] | None = None

    def logs(self, key: str) -> list[Path]:
        if self._logs is None:
            self._logs = _hydra_logs(self.pool)
        return self._logs.get(key, [])

    def state(self, key: str, members: int) -> tuple[str, int, str, Path | None]:
        """(state, members finished, detail, log) of one ensemble."""
        if ensemble_metrics(self.pool, key, members) is not None:
            return "finished", members, "", None
        edir = ensemble_path(self.pool, key)
        if not edir.is_dir():
            return "missing", 0, "", None
        done = len(finished_members(edir))
        member_dirs = sorted(p for p in edir.glob(f"{runs.MEMBER_PREFIX}*") if p.is_dir())
        for lock in [runs.lock_path(edir), *(runs.lock_path(p) for p in member_dirs)]:
            owner = lock_holder(lock, self.held)
            if owner is not None:
                epochs = [e for p in member_dirs if (e := last_epoch(p)) is not None]
                progress = f", epoch {max(epochs) + 1} logged" if epochs else ""
                return "running", done, f"{owner}{progress}", None
        unfinished = [p for p in member_dirs if not runs.is_finished(p)]
        if done and not unfinished:     # a planned ensemble still growing: no member started or failed
            return "partial", done, f"{done} of {members} members finished, the others not started", None
        candidates = [*self.logs(key), *sorted(edir.glob("*.log")),
                      *(log for p in unfinished for log in sorted(p.glob("*.log")))]
        for log in candidates:
            line = first_error(log)
            if line:
                return "failed", done, line, log
        if done >= members:
            return "failed", done, "members finished, not aggregated (hightpr-ensemble on the folder)", None
        started = next((p for p in unfinished if runs.csv_log_path(p).is_file()), None)
        csv_log = runs.csv_log_path(started) if started else None
        epoch = last_epoch(started) if started else None
        stopped = f"after epoch {epoch + 1}" if epoch is not None else "before its first epoch"
        return "failed", done, f"stopped {stopped} with no live lock (killed, or an error not logged here)", \
            csv_log or (candidates[0] if candidates else None)


def table_status(spec: TableSpec, ctx: Context, reader: PoolReader | None = None,
                 plans: list[Plan] | None = None) -> list[RunState]:
    """Every run `make table-<name> SCALE=<scale>` plans, in table order, with its state.

    Undecided grid steps list their first point (as `DRY=1` does), marked provisional. `plans`:
    the table's plans when already made (a TableView's), else made here.
    """
    reader = reader or PoolReader(ctx.pool)
    out: list[RunState] = []
    for p in plans if plans is not None else table_plans(spec, ctx):
        if p.private:
            out.append(RunState(spec.name, ctx.scale.name, p.cell, "unavailable", detail=p.private, plan=p))
            continue
        runs, _, _ = resolve(p, ctx.pool, ctx.scale.grid_limit, assume_first=True)
        for r in runs:
            state, done, detail, log = reader.state(r.key, p.members)
            if state == "missing" and p.unavailable:
                detail = f"cannot run here: {p.unavailable}"
            out.append(RunState(spec.name, ctx.scale.name, p.cell, state, r.key,
                                ensemble_path(ctx.pool, r.key), p.members, done, detail, log, r.stage,
                                r.values, r.provisional, r.overrides, p))
    return out


def counts(states: list[RunState]) -> dict[str, int]:
    """{state: number of distinct runs} (a run two cells share counts once)."""
    seen: dict[str, str] = {}
    unavailable = 0
    for s in states:
        if s.key is None:
            unavailable += 1
        else:
            seen.setdefault(s.key, s.state)
    got = Counter(seen.values())
    got["unavailable"] = unavailable
    return {state: got.get(state, 0) for state in STATES}


def summary_line(name: str, scale: str, states: list[RunState]) -> str:
    c = counts(states)
    runs = sum(v for k, v in c.items() if k != "unavailable")
    parts = [f"{c[k]} {k}" for k in STATES if c[k] and k != "unavailable"]
    cells = f"; {c['unavailable']} cells unavailable" if c["unavailable"] else ""
    return f"{name} [{scale}]: {runs} runs: {', '.join(parts) or 'none'}{cells}"


def format_table_status(spec: TableSpec, states: list[RunState], scale: str, every: bool = True) -> str:
    """The summary line, then one line per planned run (`every`) or per run not missing."""
    lines = [summary_line(spec.name, scale, states)]
    shown = [s for s in states if every or s.state in ("running", "failed", "finished")]
    width = max((len(s.cell.id) for s in shown), default=0)
    lines += [f"  {s.cell.id:<{width}}  {s.line}" for s in shown]
    return "\n".join(lines)
