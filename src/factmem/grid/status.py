"""Where a grid stands: each run's state (finished, running, failed, pending), the status
table, the plan printed before running, and the data paths checked before any model loads."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from factmem.archive import archived_data_digests, archived_fingerprints, is_finished
from factmem.atomic import write_json_atomic
from factmem.config import load_config
from factmem.config.loader import apply_overrides
from factmem.data_files import data_paths, digest
from factmem.errors import ConfigError
from factmem.grid.plan import Grid, GridRun, stage_finished
from factmem.layout import RunFolder, StageFolder, grid_record

log = logging.getLogger("factmem.grid")  # one logger name for every room


def _in_archive(run: GridRun, archive: Path) -> tuple[Path, list[str] | None, list[str]]:
    """The run's folder in the archive, its archived stage fingerprints (None: not there)
    and the fingerprints this run's config gives."""
    folder = archive / run.run_dir.parent.name / run.name
    wanted = [run.config.fingerprint(k) for k in range(len(run.config.stages))]
    return folder, archived_fingerprints(folder), wanted


def archived(run: GridRun, archive: Path | None) -> bool:
    """The run is in the archive (same grid and run name) with the same stage fingerprints,
    or with fingerprints that differ only by data paths whose files have the same digests."""
    return _archive_match(run, archive)[0]


def _archive_match(run: GridRun, archive: Path | None
                   ) -> tuple[bool, list[tuple[str, str, str, bool | None]]]:  # fmt: skip
    """(archived, archived_under_other_paths): what run_state needs, each read once."""
    if archive is None:
        return False, []
    _, fingerprints, wanted = _in_archive(run, archive)
    if fingerprints == wanted:
        return True, []
    moved = archived_under_other_paths(run, archive)
    return bool(moved) and all(same for *_, same in moved), moved


def archived_under_other_paths(run: GridRun, archive: Path | None
                               ) -> list[tuple[str, str, str, bool | None]]:  # fmt: skip
    """[(field, archived path, this run's path, same bytes), ...] when the run is archived
    with other stage fingerprints only because its data paths are spelled otherwise
    (another --data-dir: fingerprints name the path, e.g. `../shared/data` or
    `/work/shared/data`); empty otherwise. `same bytes`: the digest recorded in the archive
    equals that of the file here (True), differs (False), or was not recorded (None, an
    archive made before digests were): only True for every field makes it the same run."""
    if archive is None:
        return []
    folder, fingerprints, wanted = _in_archive(run, archive)
    config_file = RunFolder(folder).config
    if fingerprints is None or fingerprints == wanted or not config_file.is_file():
        return []
    theirs = dict(data_paths(load_config(config_file)))
    ours = dict(data_paths(run.config))
    differ = [(f, theirs[f], p) for f, p in ours.items() if theirs.get(f, p) != p]
    if not differ or set(theirs) != set(ours):
        return []
    data = run.config.model_dump(mode="json")
    apply_overrides(data, {f: path for f, path, _ in differ}, "archived paths")
    moved = type(run.config).model_validate(data)
    if [moved.fingerprint(k) for k in range(len(moved.stages))] != fingerprints:
        return []
    recorded = archived_data_digests(folder)
    return [(f, there, here, _same_bytes(recorded.get(f), here)) for f, there, here in differ]


def _same_bytes(recorded: dict | None, path: str) -> bool | None:
    if not recorded or not recorded.get("sha256"):
        return None
    return digest(path) == recorded["sha256"]


def check_archive_paths(grid: Grid, archive: Path | None) -> None:
    """Refuse to run a grid whose runs are archived under other data paths with other (or
    unrecorded) file digests: they would be trained again (hours) and their archive
    replaced. Names a run, the field, both paths and what differs."""
    moved = [(run, [d for d in differ if not d[3]]) for run in grid.runs
             if (differ := archived_under_other_paths(run, archive))
             and not all(d[3] for d in differ)]  # fmt: skip
    if not moved:
        return
    run, differ = moved[0]
    field_name, theirs, ours, same = differ[0]
    there, here = _differing_beginnings(theirs, ours)
    why = ("the files there and here differ (sha256)" if same is False else
           "the archive records no digest of the files it read (archived before archives "
           "did), so whether they are these is not known")  # fmt: skip
    raise ConfigError(
        f"grid {grid.name}: {len(moved)} run(s) are archived in {archive} with their data read "
        f"from other paths, e.g. {run.name}: {field_name} = {theirs} there, {ours} here, and "
        f"{why}. Stage fingerprints name the data path, so they would be trained again and "
        f"their archive replaced. To continue that grid, spell --data-dir as its runs did "
        f"({here!r} -> {there!r}; where the data live elsewhere, a symbolic link at that path "
        "to them does it); to make new runs, use another --archive folder"
        + ("; if these are the files the runs read, `factmem archive "
           f"{archive} --record-data-from DIR` records their digests (DIR: where the grid ran)"
           if same is None else "")
    )


def _differing_beginnings(theirs: str, ours: str) -> tuple[str, str]:
    """('/work', '..') of '/work/shared/data/x.json' and '../shared/data/x.json': what is left
    of each path once their common ending (whole path components) is taken off."""
    a, b = Path(theirs).parts, Path(ours).parts
    same = 0
    while same < min(len(a), len(b)) and a[-1 - same] == b[-1 - same]:
        same += 1
    return str(Path(*a[: len(a) - same])) if same < len(a) else "", \
        str(Path(*b[: len(b) - same])) if same < len(b) else ""  # fmt: skip


def run_state(run: GridRun, archive: Path | None = None) -> dict:
    """finished / archived / running / failed / interrupted / pending, with stages done."""
    total = len(run.config.stages)
    is_archived, moved = _archive_match(run, archive)
    if is_archived:
        detail = f"same files (sha256) under another --data-dir: {moved[0][1]}" if moved else ""
        return {"run": run.name, "state": "archived", "stages_done": total, "stages": total,
                "detail": detail}  # fmt: skip
    done = sum(stage_finished(run, k) for k in range(len(run.config.stages)))
    record: dict[str, Any] = {}
    state_file = run.folder.grid_state
    if state_file.is_file():
        record = json.loads(state_file.read_text())
    if done == total and is_finished(run.run_dir):  # results.json is written after the stages
        state = "finished"
    elif record.get("state") == "running":
        alive = record.get("host") != socket.gethostname() or _pid_alive(record.get("pid"))
        state = "running" if alive else "interrupted"
    elif record.get("state") == "failed":
        state = "failed"
    elif record.get("state") in ("done", "between stages"):
        # a stage job ended well and the next waits its turn (--jobs, Ray): not interrupted
        state = "pending"
    else:
        state = "interrupted" if done or run.folder.stages() else "pending"
    detail = record.get("error", "") if state == "failed" else ""
    if state in ("running", "interrupted") and done < total:
        detail = training_progress(run.folder.stage(done + 1), running=state == "running")
    if not detail and moved:
        detail = f"archived under another --data-dir: {moved[0][0]} = {moved[0][1]}"
    return {"run": run.name, "state": state, "stages_done": done, "stages": total,
            "detail": detail}


def training_progress(stage: StageFolder, running: bool, now: float | None = None) -> str:
    """Where a stage's training stands, from the file its training process rewrites every few
    seconds: 'stage 2: step 96 of at most 240, loss 0.45, 7.3 s a step, at most ~18 min
    left'. The stop rule may end the stage before its last step, hence "at most". For a
    stage whose process is gone: where it was last heard of, and the step a rerun resumes
    from (its newest checkpoint)."""
    try:
        at = json.loads(stage.progress.read_text())
        step, most, loss = int(at["step"]), int(at["max_steps"]), float(at["loss"])
        per_step = float(at["train_time_s"]) / max(step, 1)
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # not started, finished (its folder removed), or older code: say nothing
    if not running:
        resume = stage.last_checkpoint_step() or 0
        return (f"stage {stage.number}: last heard at step {step} of at most {most}, loss "
                f"{loss:.3g}; a rerun resumes from step {resume}")  # fmt: skip
    where = f"stage {stage.number}: step {step} of at most {most}, loss {loss:.3g}"
    left = (most - step) * per_step / 60
    ago = (now if now is not None else time.time()) - float(at.get("updated", 0))
    stale = f", last heard {ago / 60:.0f} min ago" if ago > 600 else ""
    return f"{where}, {per_step:.1f} s a step, at most ~{left:.0f} min left{stale}"


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def tracked(run: GridRun) -> Iterator[None]:
    """Record in the run directory that this process works on it, and how that ended."""
    state_file = run.folder.grid_state
    base = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    write_json_atomic(state_file, base | {"state": "running"})
    try:
        yield
    except Exception as err:
        write_json_atomic(
            state_file,
            base
            | {
                "state": "failed",
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(),
            },
        )
        raise
    except BaseException:  # Ctrl-C, kill: leave "running" -> shown as interrupted
        raise
    else:
        write_json_atomic(state_file, base | {"state": "done", "ended": time.time()})


def status_table(grid: Grid, archive: Path | None = None) -> str:
    states = [run_state(r, archive) for r in grid.runs]
    counts = {s: sum(x["state"] == s for x in states) for s in
              ("finished", "archived", "running", "interrupted", "failed", "pending")}  # fmt: skip
    lines = [f"grid {grid.name} ({grid.directory}): " + ", ".join(
        f"{n} {s}" for s, n in counts.items() if n)]  # fmt: skip
    width = max(len(r.name) for r in grid.runs)
    for x in states:
        detail = f"  {x['detail'].splitlines()[0][:120]}" if x["detail"] else ""
        lines.append(f"  {x['run']:<{width}}  {x['state']:<11} stages {x['stages_done']}/"
                     f"{x['stages']}{detail}")  # fmt: skip
    return "\n".join(lines)


def describe_plan(grid: Grid) -> str:
    c = grid.training_counts()
    return (f"grid {grid.name}: {c['runs']} runs, {c['stage_slots']} trained stages, "
            f"{c['trainings']} distinct stage trainings needed (sharing saves {c['saved']}), "
            f"{c['finished']} already finished -> {grid.directory}")  # fmt: skip


def dry_run_listing(grid: Grid, archive: Path | None = None) -> tuple[str, Grid]:
    """The plan and its runs, one a line, and the grid of runs still to make. With an archive,
    runs found there are marked skipped (a real run skips them), so `--dry-run --archive`
    budgets what is left, not the whole grid; runs archived under other data paths refuse,
    as the real run would."""
    if archive is not None:
        check_archive_paths(grid, archive)
    skipped = {run.name for run in grid.runs if archived(run, archive)}
    lines = [describe_plan(grid)]
    if archive is not None:
        lines.append(f"archive {archive}: {len(skipped)} of {len(grid.runs)} runs already "
                     f"there (skipped), {len(grid.runs) - len(skipped)} to run")  # fmt: skip
    for run in grid.runs:
        mark = "  [archived: skipped]" if run.name in skipped else ""
        lines.append(f"  {run.name}: " + ", ".join(f"{k}={v}" for k, v in run.tags.items())
                     + mark)  # fmt: skip
    todo = Grid(grid.name, grid.directory, [r for r in grid.runs if r.name not in skipped])
    return "\n".join(lines), todo


def check_data_paths(grid: Grid) -> None:
    """Refuse a plan whose runs would read local files that are not there (a dry run reads
    nothing else): one line per missing path, with its field and the first run naming it."""
    missing: dict[tuple[str, str], list[str]] = {}
    for run in grid.runs:
        for field_name, path in data_paths(run.config):
            if not Path(path).exists():
                missing.setdefault((field_name, path), []).append(run.name)
    if not missing:
        return
    lines = [f"  {runs[0]}: {field_name} = {path} does not exist"
             + (f" (and {len(runs) - 1} more runs)" if len(runs) > 1 else "")
             for (field_name, path), runs in missing.items()]  # fmt: skip
    raise ConfigError(f"grid {grid.name}: {len(missing)} data path(s) that runs would read do "
                      "not exist:\n" + "\n".join(lines) + "\n--data-dir (or FACTMEM_DATA_DIR) "
                      "must hold the layout in docs/grids-and-reports.md")  # fmt: skip


def write_plan(grid: Grid) -> None:
    """grid.json: every run's tags and config, for reports and for `--status`."""
    write_json_atomic(grid_record(grid.directory), {
        "name": grid.name,
        "runs": [{"name": r.name, "tags": r.tags, "config": r.config.model_dump(mode="json")}
                 for r in grid.runs],
    })  # fmt: skip
