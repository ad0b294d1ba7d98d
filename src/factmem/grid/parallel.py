"""`factmem grid --jobs N`: a grid's independent stages side by side on this machine.

On a CPU a stage does not use every core well (BENCHMARKS.md, "Stages side by side": two
SmolLM2 stages at 1 thread each finish sooner than the same two at 2 threads one after the
other), so N processes, each with cores / N torch threads, train independent stages at once.
A stage starts only when the stages it needs have finished: its run's previous stage, and the
stage of another run it shares by fingerprint (the dependencies `Grid.jobs` lists, which the
Ray backend also schedules by). Ray does the same on a cluster; on one machine a process pool
does it without starting a cluster's services on the cores the stages need.

Each stage runs in a fresh process (spawned, not forked from a process holding torch's
threads), with its thread count set before any work; the stage lock, resume from checkpoints
and the archive work as in a serial grid, which this gives the same results as when both
train at one thread count (tests/test_grid.py). A CPU stage's losses depend on the thread
count, which each training record names, so a grid is best run at one `--jobs` throughout.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from factmem.grid.plan import Grid, StageJob, stage_finished
from factmem.grid.status import run_state

log = logging.getLogger("factmem.grid")


def available_cores() -> int:
    """Cores this process may run on (a container's or taskset's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    return max(1, available_cores() // jobs)


def run_parallel(grid: Grid, jobs: int, archive: Path | None = None) -> list[str]:
    """Train the grid's unfinished stages in `jobs` processes at once; returns failed runs."""
    from factmem.grid.run import _archive, already_done, run_stage_job

    threads = threads_per_job(jobs)
    log.info("%d stages side by side, %d torch thread(s) each", jobs, threads)
    skipped = {i for i, run in enumerate(grid.runs) if already_done(run, archive)}
    done: set[tuple[int, int]] = set()
    todo: list[StageJob] = []
    for job in grid.jobs():
        if job.run in skipped or stage_finished(grid.runs[job.run], job.stage):
            done.add((job.run, job.stage))
        else:
            todo.append(job)
    last = {i: len(run.config.stages) - 1 for i, run in enumerate(grid.runs)}
    broken: set[tuple[int, int]] = set()
    failed: set[str] = set()
    total = len(todo)
    options = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, **options) as pool:
        running: dict[Future, StageJob] = {}
        while todo or running:
            for job in list(todo):  # in grid order: seed 0's stages first
                run = grid.runs[job.run]
                if any(need in broken for need in job.needs):
                    todo.remove(job)
                    broken.add((job.run, job.stage))
                    failed.add(run.name)
                    log.error("%s stage %d not run: a stage it needs failed", run.name,
                              job.stage + 1)  # fmt: skip
                elif len(running) < jobs and all(need in done for need in job.needs):
                    todo.remove(job)
                    log.info("started %s stage %d", run.name, job.stage + 1)
                    config = run.config.model_dump(mode="json")
                    running[pool.submit(run_stage_job, config, job.stage, threads)] = job
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                run = grid.runs[job.run]
                try:
                    future.result()
                except Exception as err:  # a stage's error: its run fails, the rest go on
                    broken.add((job.run, job.stage))
                    failed.add(run.name)
                    log.error("%s stage %d failed: %s (details: %s)", run.name, job.stage + 1,
                              str(err).splitlines()[-1] if str(err) else type(err).__name__,
                              run.folder.grid_state)  # fmt: skip
                    continue
                done.add((job.run, job.stage))
                log.info("finished %s stage %d (%d/%d)", run.name, job.stage + 1,
                         total - len(todo) - len(running), total)  # fmt: skip
                if job.stage == last[job.run]:
                    _archive(run, archive)
        # a run whose stages were all finished before (e.g. shared) but whose results were
        # never written: its last stage job scores and records it, as in a serial grid
        for i, run in enumerate(grid.runs):
            if i in skipped or run.name in failed or run_state(run)["state"] == "finished":
                continue
            config = run.config.model_dump(mode="json")
            pool.submit(run_stage_job, config, last[i], threads).result()
            _archive(run, archive)
    return sorted(failed)
