"""Experiment grids: one base config and axes to sweep, each stage trained once, resumable.

A grid file (`factmem grid GRID.yaml`):

    name: remix-table             # runs go to <output_dir>/<name>/<run name>/
    base: default                 # a preset or config file every run starts from
    set:                          # overrides for every run: {field path: value}
      stages[0].size: 16
    axes:                         # the grid is the cartesian product of its axes
      strategy:                   # a labelled axis: {label: {field path: value, ...}}
        No Mixing: {}
        Random/-: {stages[0].mixing: {source: random_words}}
      stages[1].dataset: [kvr_id, lama]   # a plain axis: a field path and its values
      seed: [0, 1, 2]
    vars: {size: 16}              # `{size}` anywhere in a value is replaced by 16
                                  # (a labelled value may set its own: `kvr: {vars: {d_a: kvr}}`,
                                  # e.g. so that `stages.1.dataset: "{d_a}_id"` follows D_A)
    profiles:                     # named sets of vars, chosen with --profile NAME
      paper: {size: 2000}

`{data_dir}` is a var too: `--data-dir DIR` (or FACTMEM_DATA_DIR) sets it, so presets can
name local copies of the datasets; without it a value that uses it becomes null, i.e. a
`path` falls back to the Hugging Face hub.

Each run's `tags` get one entry per axis (its label, or its value), which `factmem report`
groups by. Runs whose stages 1..k have the same fingerprint share stage k's checkpoint:
the first run (in grid order) trains it, the others link to it.

Scheduling is stage by stage: a stage job waits for its run's previous stage and, when it
reuses another run's stage, for that stage. The local backend runs the jobs in order in
this process; `ray` submits each job as a Ray task with the same dependencies.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factmem.archive import archive_run, archived_fingerprints, is_finished, write_readme
from factmem.atomic import write_json_atomic
from factmem.config import (
    ExperimentConfig,
    apply_overrides,
    find_config,
    load_config,
    read_config_data,
    split_override,
)
from factmem.config.grid_file import read_grid_file
from factmem.errors import ConfigError, FactmemError
from factmem.layout import RunFolder, grid_record

log = logging.getLogger(__name__)

class GridError(FactmemError):
    """Some runs of a grid failed (the message lists them and where their logs are)."""


@dataclass
class GridRun:
    """One point of the grid: its labels and its fully resolved config."""

    name: str
    tags: dict[str, str]
    config: ExperimentConfig

    @property
    def folder(self) -> RunFolder:
        return RunFolder.of(self.config.output_dir, self.config.name)

    @property
    def run_dir(self) -> Path:
        return self.folder.path


@dataclass
class StageJob:
    """Stage `stage` of run `run`; `owner` is the job that trains its checkpoint."""

    run: int
    stage: int
    fingerprint: str
    trains: bool
    owner: tuple[int, int]
    needs: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Grid:
    name: str
    directory: Path
    runs: list[GridRun]

    def jobs(self) -> list[StageJob]:
        """Every (run, stage) in dependency order, with the stage it shares if any."""
        owners: dict[str, tuple[int, int]] = {}
        jobs = []
        for i, run in enumerate(self.runs):
            for k, stage in enumerate(run.config.stages):
                fingerprint = run.config.fingerprint(k)
                owner = owners.setdefault(fingerprint, (i, k)) if stage.train else (i, k)
                needs = ([(i, k - 1)] if k else []) + ([owner] if owner != (i, k) else [])
                jobs.append(StageJob(i, k, fingerprint, stage.train, owner, needs))
        return jobs

    def training_counts(self) -> dict[str, int]:
        """Stage trainings: in all runs, distinct (the grid's cost), and already finished."""
        jobs = [j for j in self.jobs() if j.trains]
        distinct = {j.fingerprint for j in jobs}
        done = {j.fingerprint for j in jobs if stage_finished(self.runs[j.run], j.stage)}
        return {"runs": len(self.runs), "stage_slots": len(jobs), "trainings": len(distinct),
                "saved": len(jobs) - len(distinct), "finished": len(done)}  # fmt: skip


# ---------------------------------------------------------------- reading a grid file


def load_grid(
    path: str | Path,
    overrides: list[str] = (),
    profile: str | None = None,
    data_dir: str | None = None,
    only: list[str] = (),
) -> Grid:
    """Read a grid file (or a preset under configs/grids/) and expand it to runs.

    `only`: `axis=label` filters (`strategy=-/Generic`, `D_B=lama`); labels of one axis are
    alternatives, different axes must all match. A slice of a grid keeps its run names, so
    the full grid later finds those runs finished."""
    grid_path = _find_grid(path)
    grid_file = read_grid_file(grid_path)
    common, variables = dict(grid_file.set), dict(grid_file.vars)
    if profile is not None:
        if profile not in grid_file.profiles:
            raise ConfigError(f"{grid_path}: no profile {profile!r}; profiles: "
                              f"{', '.join(grid_file.profiles) or 'none'}")  # fmt: skip
        variables |= grid_file.profiles[profile]
    variables["data_dir"] = data_dir or os.environ.get("FACTMEM_DATA_DIR")
    # vars may use other vars: `corpus_path: "{data_dir}/nltk/state_union.zip"`
    for _ in range(5):  # a var inside a var inside a var ... (no cycles in practice)
        variables |= _fill({k: v for k, v in variables.items() if k != "data_dir"}, variables,
                           f"{grid_path}: vars")  # fmt: skip
    last: dict[str, Any] = {}  # --set on the command line: every run, after the axes
    for text in overrides:
        key, value = split_override(text)
        last[key] = value
    axes = _read_axes(grid_file.axes, grid_path)
    root = last.pop("output_dir", None) or grid_file.output_dir or "runs"
    directory = Path(root) / grid_file.name
    base_path = Path(grid_file.base)
    if not base_path.is_absolute() and (grid_path.parent / base_path).is_file():
        base_path = grid_path.parent / base_path  # a file beside the grid file
    base = read_config_data(find_config(base_path))  # else a path, or a preset in configs/
    runs = []
    for point in itertools.product(*[[(name, *v) for v in values] for name, values in axes]):
        tags = {name: label for name, label, _ in point}
        run_name = "_".join(_slug(label, name) for name, label, _ in point) or grid_file.name
        where = f"{grid_path} ({', '.join(f'{k}={v}' for k, v in tags.items()) or 'base'})"
        config_data = json.loads(json.dumps(base))  # a deep copy
        point_vars = dict(variables)  # a labelled axis value may set vars for the whole point
        for _, _, values in point:
            point_vars |= _fill(values.get("vars") or {}, variables, where)
        apply_overrides(config_data, _fill(common, point_vars, where), where)
        for _, _, values in point:
            values = {k: v for k, v in values.items() if k != "vars"}
            apply_overrides(config_data, _fill(values, point_vars, where), where)
        before_flags = json.loads(json.dumps(config_data))
        apply_overrides(config_data, last, where)
        named = {"name": run_name, "output_dir": str(directory), "share_stages": True,
                 "tags": config_data.get("tags", {}) | tags}  # fmt: skip
        config_data |= named
        try:
            config = load_config(config_data)
        except ConfigError as err:
            raise ConfigError(_blame(err, where, before_flags | named, overrides)) from None
        runs.append(GridRun(run_name, tags, config))
    names = [r.name for r in runs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ConfigError(f"{grid_path}: runs with the same name {clash}; give axis values "
                          "distinct labels")  # fmt: skip
    return Grid(grid_file.name, directory, _select(runs, only, axes, grid_path))


def _blame(err: ConfigError, where: str, without_flags: dict, overrides: list[str]) -> str:
    """A run's config error, put on the `--set` flags when the run is valid without them."""
    if overrides:
        try:
            load_config(without_flags)
        except ConfigError:
            pass
        else:
            return f"{' '.join(f'--set {o}' for o in overrides)}: {err}"
    return f"{where}: {err}"


def _select(runs: list[GridRun], only: list[str], axes, source: Path) -> list[GridRun]:
    wanted: dict[str, set[str]] = {}
    labels = {name: {label for label, _ in values} for name, values in axes}
    for text in only:
        axis, _, label = text.partition("=")
        if axis not in labels:
            raise ConfigError(f"--only {text!r}: {source} has no axis {axis!r}; axes: "
                              f"{', '.join(labels)}")  # fmt: skip
        if label not in labels[axis]:
            raise ConfigError(f"--only {text!r}: axis {axis!r} has no value {label!r}; "
                              f"values: {', '.join(sorted(labels[axis]))}")  # fmt: skip
        wanted.setdefault(axis, set()).add(label)
    return [r for r in runs if all(r.tags[a] in v for a, v in wanted.items())]


def _fill(overrides: dict, variables: dict, where: str) -> dict:
    """`{var}` in values -> the var's value: a value that is just `{var}` keeps its type;
    inside a longer string it is text; a var that is null makes the whole value null."""

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if not isinstance(value, str) or "{" not in value:
            return value
        names = re.findall(r"\{(\w+)\}", value)
        unknown = [n for n in names if n not in variables]
        if unknown:
            raise ConfigError(f"{where}: {value!r} uses {{{unknown[0]}}}, which is not in "
                              "the grid's `vars`")  # fmt: skip
        if any(variables[n] is None for n in names):
            return None
        if re.fullmatch(r"\{\w+\}", value):
            return variables[names[0]]
        return re.sub(r"\{(\w+)\}", lambda m: str(variables[m.group(1)]), value)

    return {key: fill(value) for key, value in overrides.items()}


def _find_grid(path: str | Path) -> Path:
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    try:
        return find_config(f"grids/{path}")
    except ConfigError:
        from factmem.config.loader import PRESET_DIRS

        presets = sorted({p.stem for d in PRESET_DIRS if (d / "grids").is_dir()
                          for p in (d / "grids").glob("*.yaml")})  # fmt: skip
        raise ConfigError(f"no grid file or grid preset named {str(path)!r}; grid presets: "
                          f"{', '.join(presets)}") from None  # fmt: skip


def _read_axes(axes: Any, source: Path) -> list[tuple[str, list[tuple[str, dict]]]]:
    """[(axis name, [(label, {field path: value})])]: plain axes get their values as labels."""
    if not isinstance(axes, dict):
        raise ConfigError(f"{source}: `axes` must map an axis name to its values")
    out = []
    for name, values in axes.items():
        if isinstance(values, list) and values:
            out.append((str(name), [(_label(v), {str(name): v}) for v in values]))
        elif isinstance(values, dict) and values:
            bundles = []
            for label, overrides in values.items():
                if isinstance(overrides, dict) and not isinstance(overrides.get("vars", {}),
                                                                   dict):  # fmt: skip
                    raise ConfigError(f"{source}: axes.{name}.{label}.vars: expected a mapping "
                                      "of var name -> value")  # fmt: skip
                if not isinstance(overrides, dict):
                    raise ConfigError(f"{source}: axes.{name}.{label}: expected a mapping of "
                                      f"field path -> value, got {overrides!r}")  # fmt: skip
                bundles.append((str(label), overrides))
            out.append((str(name), bundles))
        else:
            raise ConfigError(f"{source}: axes.{name}: give a non-empty list of values, or a "
                              "mapping of label -> {field path: value}")  # fmt: skip
    return out


def _label(value: Any) -> str:
    return "-" if value is None else str(value)


def _slug(label: str, axis: str) -> str:
    """A directory-safe piece of a run name: `Random/-` -> random_none, seed 0 -> seed0."""
    if re.fullmatch(r"-?[0-9.e+-]+", label):
        return f"{axis.split('.')[-1].split(']')[-1]}{label}"
    parts = [re.sub(r"[^a-z0-9.]+", "-", p.strip().lower()).strip("-") or "none"
             for p in label.split("/")]  # fmt: skip
    return "_".join(parts)


# ---------------------------------------------------------------- state of runs


def stage_finished(run: GridRun, index: int) -> bool:
    """Stage `index` of `run` finished (its record written last) by this very config."""
    return run.folder.stage(index + 1).is_finished_by(run.config.fingerprint(index))


def archived(run: GridRun, archive: Path | None) -> bool:
    """The run is in the archive (same grid and run name) with the same stage fingerprints."""
    if archive is None:
        return False
    fingerprints = archived_fingerprints(archive / run.run_dir.parent.name / run.name)
    wanted = [run.config.fingerprint(k) for k in range(len(run.config.stages))]
    return fingerprints == wanted


def run_state(run: GridRun, archive: Path | None = None) -> dict:
    """finished / archived / running / failed / interrupted / pending, with stages done."""
    total = len(run.config.stages)
    if archived(run, archive):
        return {"run": run.name, "state": "archived", "stages_done": total, "stages": total,
                "detail": ""}  # fmt: skip
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
    else:
        state = "interrupted" if done or run.folder.stages() else "pending"
    return {"run": run.name, "state": state, "stages_done": done, "stages": total,
            "detail": record.get("error", "") if state == "failed" else ""}  # fmt: skip


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
def _tracked(run: GridRun) -> Iterator[None]:
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
        detail = f"  {x['detail'].splitlines()[0][:100]}" if x["detail"] else ""
        lines.append(f"  {x['run']:<{width}}  {x['state']:<11} stages {x['stages_done']}/"
                     f"{x['stages']}{detail}")  # fmt: skip
    return "\n".join(lines)


def describe_plan(grid: Grid) -> str:
    c = grid.training_counts()
    return (f"grid {grid.name}: {c['runs']} runs, {c['stage_slots']} trained stages, "
            f"{c['trainings']} distinct stage trainings needed (sharing saves {c['saved']}), "
            f"{c['finished']} already finished -> {grid.directory}")  # fmt: skip


def data_paths(run: GridRun) -> Iterator[tuple[str, str]]:
    """(field, path) of every local file or folder a run's stages would read."""
    for k, stage in enumerate(run.config.stages):
        if stage.path:
            yield f"stages[{k}].path", stage.path
        if isinstance(stage.options.get("templates"), str):
            yield f"stages[{k}].options.templates", stage.options["templates"]
        mixing = stage.mixing
        if mixing is None:
            continue
        if mixing.source == "generic" and mixing.corpus == "local" and mixing.path:
            yield f"stages[{k}].mixing.path", mixing.path
        if mixing.source == "random_words" and mixing.word_list:
            yield f"stages[{k}].mixing.word_list", mixing.word_list


def check_data_paths(grid: Grid) -> None:
    """Refuse a plan whose runs would read local files that are not there (a dry run reads
    nothing else): one line per missing path, with its field and the first run naming it."""
    missing: dict[tuple[str, str], list[str]] = {}
    for run in grid.runs:
        for field_name, path in data_paths(run):
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


# ---------------------------------------------------------------- running


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
    with _run_log(run.folder), _tracked(run):
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
        state = run_state(run, archive)["state"]
        if state == "finished":
            _archive(run, archive)
        if state in ("finished", "archived"):
            continue
        log.info("run %d/%d: %s (%s)", number, len(grid.runs), run.name,
                 ", ".join(f"{k}={v}" for k, v in run.tags.items()))  # fmt: skip
        try:
            with _run_log(run.folder), _tracked(run):
                run_experiment(run.config, run.run_dir, progress=progress)
        except Exception as err:  # one broken run must not stop the grid
            log.error("run %s failed: %s (details: %s)", run.name, err, run.folder.grid_state)
            failed.append(run.name)
        else:
            _archive(run, archive)
    return failed


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
             archive: Path | None = None, **ray_options) -> None:  # fmt: skip
    grid.directory.mkdir(parents=True, exist_ok=True)
    write_plan(grid)
    log.info(describe_plan(grid))
    if archive is not None:
        log.info("archive %s: %d of %d runs already there", archive,
                 sum(archived(r, archive) for r in grid.runs), len(grid.runs))  # fmt: skip
    if backend == "local":
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
