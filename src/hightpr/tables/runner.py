"""Train what a table is missing: cells -> runs -> compose + validate -> train (in-process or a launcher).

Every run is an ensemble in the scale's pool `results/runs/<scale>/ensembles/<key>`; a finished
one (metrics.json with the scale's members) is reused, an unfinished one gets its missing
members. Grid steps run in order: a step's points are trained, the best on validation is kept,
the next step starts from it. A failed run fails its cell (named with its run dir); the other
cells go on, and what finished stays.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hightpr import runs
from hightpr.errors import HightprError
from hightpr.tables.cells import Cell, Plan, matches, paper_cells, plan
from hightpr.tables.results import Run, ensemble_metrics, ensemble_path, pool_dir, resolve
from hightpr.tables.specs import Scale, TableSpec

LAUNCHERS = {"local": "basic", "slurm": "slurm"}  # LAUNCHER= -> hydra/launcher=


@dataclass
class Context:
    """Where a table reads and writes: the repository's results/, the data, the scale."""

    scale: Scale
    results_dir: Path = Path("results")
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("HIGHTPR_DATA_DIR", "data")))
    paper_root: Path | None = None      # the paper CSVs; default <results_dir>/paper

    @property
    def paper_dir(self) -> Path:
        return Path(self.paper_root) if self.paper_root is not None else self.results_dir / "paper"

    @property
    def pool(self) -> Path:
        return pool_dir(self.results_dir, self.scale.name)

    @property
    def run_data_dir(self) -> Path:
        return self.data_dir / "standins" if self.scale.standins else self.data_dir

    def machine_overrides(self, plan_: Plan, run: Run) -> list[str]:
        """Where a run reads and writes (not part of its key)."""
        return [f"name={self.scale.name}", f"paths.output_root={self.results_dir / 'runs'}",
                f"paths.data_dir={Path(self.run_data_dir).absolute()}", f"ensemble.members={plan_.members}",
                f"ensemble.key={run.key}", *self.scale.execution]


def select_rows(cells: list[Cell], spec: TableSpec, rows: str | None) -> list[Cell]:
    """ROWS: comma-separated names of `blocks` in tables.yaml or glob patterns on a cell's row
    (`bce*`, `bce+alm`, `bce:sampler=dual`), or on its full id when the pattern has a '/'
    (`cifar10_binary.main@100/*`). Hidden reference rows follow the rows they serve."""
    if not rows:
        return cells
    patterns: list[str] = []
    for item in (r.strip() for r in rows.split(",")):
        patterns += list(spec.blocks.get(item, [item])) if item else []
    picked = [c for c in cells if any(matches(c, p) for p in patterns)]
    if not picked:
        known = ", ".join(dict.fromkeys(c.row for c in cells if not c.hidden))
        raise HightprError(f"ROWS={rows} matches no row of {spec.name}; rows: {known}"
                           + (f"; blocks: {', '.join(spec.blocks)}" if spec.blocks else ""))
    refs = {(c.section, c.base_loss) for c in picked}
    return [c for c in cells if c in picked or (c.hidden and (c.section, c.base_loss) in refs)]


def table_plans(spec: TableSpec, ctx: Context, rows: str | None = None) -> list[Plan]:
    cells = select_rows(paper_cells(spec, ctx.paper_dir), spec, rows)
    return [plan(spec, c, ctx.scale, ctx.paper_dir, ctx.data_dir) for c in cells]


def compose_run(plan_: Plan, run: Run, ctx: Context):
    """The run's full config, composed as `python train.py ...` would, and validated (check_keys)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from hightpr.checks import check_keys
    from hightpr.config import compose_config

    try:
        cfg = compose_config([*run.overrides, *(o for o in ctx.machine_overrides(plan_, run)
                                                 if not launcher_setting(o))])
        check_keys(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise HightprError(f"{plan_.cell.id}: its config does not compose ({type(err).__name__}: "
                           f"{str(err).splitlines()[0]}); overrides: {' '.join(run.overrides)}") from err
    except HightprError as err:
        raise HightprError(f"{plan_.cell.id}: {err}") from err
    return cfg


# -- DRY: list and validate ---------------------------------------------------------------------
@dataclass
class Listing:
    cell: Cell
    run: Run | None
    status: str                    # exists | partial k/N | missing | unavailable: reason


def dry_run(spec: TableSpec, ctx: Context, rows: str | None = None, validate: bool = True) -> list[Listing]:
    """Every run the table needs at this scale and whether it exists; each config composed and
    checked (check_keys), nothing built or trained. Undecided grid steps assume their first point."""
    out: list[Listing] = []
    errors: list[str] = []
    for p in table_plans(spec, ctx, rows):
        if p.unavailable:
            out.append(Listing(p.cell, None, f"unavailable: {p.unavailable}"))
            continue
        runs, _, _ = resolve(p, ctx.pool, ctx.scale.grid_limit, assume_first=True)
        for r in runs:
            if validate:
                try:
                    compose_run(p, r, ctx)
                except HightprError as err:
                    errors.append(str(err))
            out.append(Listing(p.cell, r, _status(ctx.pool, r.key, p.members)))
    if errors:
        raise HightprError(f"{len(errors)} run config(s) of {spec.name} do not validate:\n  "
                           + "\n  ".join(errors))
    return out


def _status(pool: Path, key: str, members: int) -> str:
    if ensemble_metrics(pool, key, members) is not None:
        return "exists"
    from hightpr.ensemble import finished_members

    done = len(finished_members(ensemble_path(pool, key))) if ensemble_path(pool, key).is_dir() else 0
    return f"partial {done}/{members} members" if done else "missing"


def format_listing(spec: TableSpec, ctx: Context, listing: list[Listing]) -> str:
    runs = [x for x in listing if x.run is not None]
    keys = {x.run.key for x in runs}
    exist = {x.run.key for x in runs if x.status == "exists"}
    unavailable = [x for x in listing if x.run is None]
    lines = [f"{spec.name} [{ctx.scale.name}]: {len({x.cell for x in listing})} cells, {len(keys)} runs "
             f"({len(exist)} exist, {len(keys - exist)} to train), {len(unavailable)} cells unavailable"]
    width = max((len(x.cell.id) for x in listing), default=0)
    for x in listing:
        what = x.run.key + (f" [{x.run.stage}: " + ", ".join(f"{k}={v}" for k, v in x.run.values) + "]"
                            if x.run.stage else "") + (" (after selection)" if x.run.provisional else "") \
            if x.run else ""
        lines.append(f"  {x.cell.id:<{width}}  {x.status:<10} {what}")
    return "\n".join(lines)


# -- training -----------------------------------------------------------------------------------
@dataclass
class Summary:
    trained: int = 0
    reused: int = 0
    failures: dict = field(default_factory=dict)   # key -> (cell id, run dir, message)
    unavailable: int = 0

    def line(self, spec: TableSpec, scale: str, total: int) -> str:
        return (f"{spec.name} [{scale}]: {total} runs: {self.trained} trained, {self.reused} reused, "
                f"{len(self.failures)} failed; {self.unavailable} cells unavailable")


TrainFn = Callable[[Plan, Run, Context], None]
# where the run under way reports its epochs (`epoch 3/15 (240 s)`): the table's progress bar
STATUS: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("status", default=None)


def train_in_process(plan_: Plan, run: Run, ctx: Context) -> None:
    """`train(cfg)` of the run's ensemble: its missing members, then the aggregate."""
    from hightpr.training import train

    cfg = compose_run(plan_, run, ctx)
    with _quiet(STATUS.get()):
        train(cfg)


class _EpochStatus(logging.Filter):
    """On the `hightpr` logger while a table trains: warnings pass, `epoch i/n (t s): ...` lines of
    batched training become the progress bar's status, every other line is dropped."""

    def __init__(self, status: Callable[[str], None]) -> None:
        super().__init__()
        self.status = status

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        message = record.getMessage()
        if message.startswith("epoch "):
            self.status(message.split(": ")[0])
        return False


@contextlib.contextmanager
def _quiet(status: Callable[[str], None] | None = None) -> Iterator[None]:
    """Training logs under the progress bar: warnings and errors only (and epochs as its status)."""
    names = ("hightpr", "pytorch_lightning", "lightning", "lightning.pytorch", "lightning.fabric")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    own = logging.getLogger("hightpr")
    epochs = _EpochStatus(status or (lambda text: None))
    own.setLevel(logging.INFO if status else logging.WARNING)
    own.addFilter(epochs)
    os.environ.setdefault("PL_DISABLE_FORK", "1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        own.removeFilter(epochs)
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def launcher_setting(override: str) -> bool:
    """`hydra.launcher.partition=debug`: a setting of the launcher (`--override`, with `--launcher`),
    passed to it on its command line, not part of a run's config."""
    return override.lstrip("+~").startswith("hydra.launcher.")


def launcher_error(output: str) -> str:
    """What a launcher's command ended with: its `error:` line, else its last line."""
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("error: ")]
    return own[-1].removeprefix("error: ") if own else (lines[-1] if lines else "no output")


def launcher_command(plan_: Plan, run: Run, ctx: Context, launcher: str) -> list[str]:
    """`python -m hightpr.cli.train -m hydra/launcher=X <overrides> ensemble.member=1,...,N`:
    one job per member through the Hydra launcher; aggregated by the runner afterwards."""
    machine = [o for o in ctx.machine_overrides(plan_, run) if not o.startswith("ensemble.members=")]
    members = ",".join(str(m) for m in range(1, plan_.members + 1))
    return [sys.executable, "-m", "hightpr.cli.train", "-m", f"hydra/launcher={LAUNCHERS[launcher]}",
            *run.overrides, *machine, f"ensemble.member={members}"]


def train_with_launcher(batch: list[tuple[Plan, Run]], ctx: Context, launcher: str,
                        parallel: int) -> dict[str, str]:
    """Run each missing ensemble as a Hydra multirun over its members, `parallel` at a time, then
    aggregate the members that finished. Returns {key: error message} of those that failed."""
    from hightpr.ensemble import finish_ensemble

    failed: dict[str, str] = {}
    queue = list(batch)
    while queue:
        chunk, queue = queue[:parallel], queue[parallel:]
        procs = [(p, r, subprocess.Popen(launcher_command(p, r, ctx, launcher), stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)) for p, r in chunk]
        for _, r, proc in procs:
            out, _ = proc.communicate()
            edir = ensemble_path(ctx.pool, r.key)
            if proc.returncode != 0:
                failed[r.key] = f"the launcher exited with {proc.returncode}: {launcher_error(out)}"
                continue
            try:
                finish_ensemble(edir, ctx.pool / "runs.csv")
            except HightprError as err:
                failed[r.key] = str(err)
    return failed


def run_table(spec: TableSpec, ctx: Context, rows: str | None = None, launcher: str | None = None,
              train_fn: TrainFn | None = None, progress: bool = True, parallel: int | None = None) -> Summary:
    """Train every missing run of the table (grid steps in order). Raises nothing for a failed
    run: it is in the summary, with its run dir; the caller renders, then fails."""
    if launcher is not None and launcher not in LAUNCHERS:
        raise HightprError(f"LAUNCHER={launcher}: use one of {', '.join(LAUNCHERS)}")
    settings = [o for o in ctx.scale.execution if launcher_setting(o)]
    if settings and launcher is None:
        raise HightprError(f"--override {settings[0]} is a launcher setting: add --launcher slurm "
                           "(LAUNCHER=slurm)")
    plans = table_plans(spec, ctx, rows)
    summary = Summary(unavailable=sum(1 for p in plans if p.unavailable))
    plans = [p for p in plans if not p.unavailable]
    if ctx.scale.standins and plans:
        from hightpr.tables.standins import prepare_standins

        prepare_standins(ctx.run_data_dir, {p.cell.dataset for p in plans})
    limit = ctx.scale.grid_limit
    total = len({r.key for p in plans for r in resolve(p, ctx.pool, limit, assume_first=True)[0]})
    train_fn = train_fn or train_in_process
    seen: set[str] = set()
    attempted: set[str] = set()
    with _progress(progress, total, f"{spec.name} [{ctx.scale.name}]") as (advance, status):
        pending = plans
        while pending:
            batch: dict[str, tuple[Plan, Run]] = {}
            still: list[Plan] = []
            for p in pending:
                runs, _, final = resolve(p, ctx.pool, limit)
                if any(r.key in summary.failures for r in runs):
                    continue
                missing = [r for r in runs if ensemble_metrics(ctx.pool, r.key, p.members) is None]
                for r in runs:
                    if r not in missing and r.key not in seen:
                        seen.add(r.key)
                        summary.reused += 1
                        advance(r.key)
                for r in missing:
                    if r.key in attempted:   # trained, yet no ensemble with enough members
                        summary.failures[r.key] = (p.cell.id, ensemble_path(ctx.pool, r.key),
                                                   f"finished without {p.members} members")
                    else:
                        batch.setdefault(r.key, (p, r))
                if final is None or missing:
                    still.append(p)
            if not batch:
                break
            if launcher is not None:
                errors = train_with_launcher(list(batch.values()), ctx, launcher,
                                             parallel or (1 if launcher == "local" else 64))
            else:
                errors = {}
                for key, (p, r) in batch.items():
                    status(f"training {key}")
                    token = STATUS.set(_status_of(status, key))
                    try:
                        train_fn(p, r, ctx)
                    except Exception as err:  # noqa: BLE001 - any failure fails this cell only
                        errors[key] = f"{type(err).__name__}: {err}"
                    finally:
                        STATUS.reset(token)
                    advance(key)
            for key, (p, _) in batch.items():
                attempted.add(key)
                seen.add(key)
                if key in errors:
                    summary.failures[key] = (p.cell.id, ensemble_path(ctx.pool, key), errors[key])
                else:
                    summary.trained += 1
                if launcher is not None:
                    advance(key)
            pending = still
    return summary


@contextlib.contextmanager
def _progress(enabled: bool, total: int, title: str):
    """(advance(key): one run done, status(text): what is under way) of a bar over a table's runs."""
    if not enabled or total == 0:
        yield (lambda key: None), (lambda text: None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[key]}"), transient=False) as bar:
        task = bar.add_task(title, total=total, key="")
        yield (lambda key: bar.update(task, advance=1, key=key)), (lambda text: bar.update(task, key=text))


def _status_of(status: Callable[[str], None], key: str) -> Callable[[str], None]:
    return lambda text: status(f"training {key}: {text}")


def failed_dir(edir: Path) -> Path:
    """The member dir a failure left unfinished (`runs.is_finished` false), else the ensemble dir."""
    unfinished = sorted(p for p in Path(edir).glob(f"{runs.MEMBER_PREFIX}*") if not runs.is_finished(p))
    return unfinished[0] if unfinished else Path(edir)


def failure_message(summary: Summary) -> str:
    lines = [f"{cell}: {message.splitlines()[0][:300] if message else 'failed'} (run dir {failed_dir(path)})"
             for cell, path, message in summary.failures.values()]
    return f"{len(lines)} run(s) failed; finished runs are kept:\n  " + "\n  ".join(lines)
