"""Running a grid's stage jobs: in order in this process (local) or as Ray tasks with the
same dependencies; each finished run archived weight-free when asked."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from factmem.archive import archive_run, write_readme
from factmem.atomic import write_json_atomic
from factmem.config import load_config
from factmem.errors import ConfigError, FactmemError
from factmem.grid.plan import Grid, GridError, GridRun, stage_finished
from factmem.grid.status import (
    archived,
    check_archive_paths,
    describe_plan,
    run_state,
    tracked,
    write_plan,
)
from factmem.layout import RunFolder

log = logging.getLogger("factmem.grid")  # one logger name for every room


def run_stage_job(config_data: dict, upto: int, threads: int | None = None, *after: str) -> str:
    """Run stages 0..upto of one run (finished ones are skipped); the unit a backend schedules.

    `after`: results of the jobs this one waits for (Ray resolves them before calling).
    """
    from factmem.pipeline import run_experiment

    if threads:
        import torch

        torch.set_num_threads(threads)
    config = load_config(config_data)
    run = GridRun(config.name, dict(config.tags), config)
    with _run_log(run.folder), tracked(run):
        node = _ray_node()
        if node:
            log.info("stage %d of %s on Ray node %s", upto + 1, config.name, node)
        run_experiment(config, run.run_dir, progress=False, upto=upto)
        if upto < len(config.stages) - 1:
            write_json_atomic(run.folder.grid_state, {"state": "between stages"})
    return f"{config.name} stage {upto + 1}"


def _ray_node() -> str | None:
    """The Ray node this task runs on (None outside Ray): the log says where a stage ran."""
    try:
        import ray
    except ImportError:
        return None
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


@contextmanager
def _run_log(run: RunFolder) -> Iterator[None]:
    """Also write this process's log to the run's own run.log while it works on the run
    (a Ray worker has no terminal; a local grid's log interleaves every run)."""
    run.path.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run.log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    if level > logging.INFO or level == logging.NOTSET:  # the file gets INFO; the terminal not
        for other in root.handlers:
            if other.level == logging.NOTSET:
                other.setLevel(level or logging.WARNING)
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def run_local(grid: Grid, progress: bool = True, archive: Path | None = None) -> list[str]:
    """Run the grid's runs in order in this process; returns the names of failed runs.
    With an archive, runs found there are skipped and each run finished is archived."""
    from factmem.pipeline import run_experiment

    failed = []
    for number, run in enumerate(grid.runs, 1):
        if already_done(run, archive):
            continue
        log.info("run %d/%d: %s (%s)", number, len(grid.runs), run.name,
                 ", ".join(f"{k}={v}" for k, v in run.tags.items()))  # fmt: skip
        try:
            with _run_log(run.folder), tracked(run):
                run_experiment(run.config, run.run_dir, progress=progress)
        except Exception as err:  # one broken run must not stop the grid
            log.error("run %s failed: %s (details: %s)", run.name, err, run.folder.grid_state)
            failed.append(run.name)
        else:
            _archive(run, archive)
    return failed


def already_done(run: GridRun, archive: Path | None) -> bool:
    """A run with nothing left to train: finished here (archived now if it was not yet), or
    found in the archive."""
    state = run_state(run, archive)["state"]
    if state == "finished":
        _archive(run, archive)
    return state in ("finished", "archived")


def _archive(run: GridRun, archive: Path | None) -> None:
    if archive is not None and not archived(run, archive):
        dest = archive_run(run.run_dir, archive / run.run_dir.parent.name / run.name)
        write_readme(archive)
        log.info("archived %s -> %s", run.name, dest)


def run_ray(grid: Grid, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0,
            archive: Path | None = None) -> list[str]:  # fmt: skip
    """Submit every unfinished stage as a Ray task, with the stage dependencies as arguments.

    Ray starts a task only when the tasks it depends on have finished, so a stage waits for
    its run's previous stage and for the run that trains the checkpoint it shares. A failed
    task fails the tasks that depend on it; the rest go on.
    """
    try:
        import ray
    except ImportError:
        raise FactmemError("--backend ray needs Ray: pip install 'ray>=2.40'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)  # fmt: skip
    # A task lost with its node (or its worker process) is run again elsewhere, up to twice;
    # the stage resumes from its last checkpoint in the shared runs folder. A stage that
    # raises is not retried: the same error would come back (the rerun of the grid retries).
    task = ray.remote(run_stage_job).options(num_cpus=cpus, num_gpus=gpus, max_retries=2)
    threads = max(1, int(cpus))
    refs: dict[tuple[int, int], Any] = {}
    skipped = {i for i, run in enumerate(grid.runs) if archived(run, archive)}
    for job in grid.jobs():
        run = grid.runs[job.run]
        if job.run in skipped or stage_finished(run, job.stage):
            refs[job.run, job.stage] = None
            continue
        deps = [refs[n] for n in job.needs if refs.get(n) is not None]
        config_data = run.config.model_dump(mode="json")
        refs[job.run, job.stage] = task.remote(config_data, job.stage, threads, *deps)
    pending = {ref: key for key, ref in refs.items() if ref is not None}
    failed: set[str] = set()
    total = len(pending)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        key = pending.pop(ready[0])
        name = grid.runs[key[0]].name
        try:
            ray.get(ready[0])
            log.info("finished %s stage %d (%d/%d)", name, key[1] + 1, total - len(pending), total)
        except Exception as err:  # a task's error, or a dependency's
            log.error("%s stage %d failed: %s", name, key[1] + 1, str(err).splitlines()[-1])
            failed.add(name)
    for i, run in enumerate(grid.runs):
        if i in skipped or grid.runs[i].name in failed:
            continue
        if run_state(run)["state"] != "finished":  # every stage done, results.json not yet
            run_stage_job(run.config.model_dump(mode="json"), len(run.config.stages) - 1)
        _archive(run, archive)
    return sorted(failed)


def run_grid(grid: Grid, backend: str = "local", progress: bool = True,
             archive: Path | None = None, jobs: int = 1, **ray_options) -> None:  # fmt: skip
    check_archive_paths(grid, archive)
    grid.directory.mkdir(parents=True, exist_ok=True)
    write_plan(grid)
    log.info(describe_plan(grid))
    if archive is not None:
        log.info("archive %s: %d of %d runs already there", archive,
                 sum(archived(r, archive) for r in grid.runs), len(grid.runs))  # fmt: skip
    if backend == "local" and jobs > 1:
        from factmem.grid.parallel import run_parallel

        failed = run_parallel(grid, jobs, archive)
    elif backend == "local":
        failed = run_local(grid, progress, archive)
    elif backend == "ray":
        failed = run_ray(grid, archive=archive, **ray_options)
    else:
        raise ConfigError(f"unknown backend {backend!r}; use local or ray")
    if failed:
        raise GridError(
            f"{len(failed)} of {len(grid.runs)} runs failed: {', '.join(failed)}; each run's "
            "grid-state.json and run.log say why. The same command retries them."
        )
