"""A grid file read and expanded: its axes into runs (GridRun), each run's stages into jobs
(StageJob) with the jobs they wait for, shared stages found by fingerprint."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from factmem.layout import RunFolder

log = logging.getLogger("factmem.grid")  # one logger name for every room


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


def stage_finished(run: GridRun, index: int) -> bool:
    """Stage `index` of `run` finished (its record written last) by this very config."""
    return run.folder.stage(index + 1).is_finished_by(run.config.fingerprint(index))


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
    elif only_in_profiles := sorted({k for v in grid_file.profiles.values() for k in v}
                                    - set(variables)):  # fmt: skip
        raise ConfigError(f"{grid_path}: {', '.join(only_in_profiles)} set only by its "
                          f"profiles: choose one with --profile NAME ("
                          f"{', '.join(grid_file.profiles)})")  # fmt: skip
    variables["data_dir"] = data_dir or os.environ.get("FACTMEM_DATA_DIR")
    raw_vars = dict(variables)  # each point resolves these again, after its axes' vars
    variables = _resolve(raw_vars, f"{grid_path}: vars")
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
        # a labelled axis value may set vars for the whole point, and a var that uses one
        # (`random: {words: "{words}"}`) sees the point's value, not the grid's default
        point_vars = dict(raw_vars)
        for _, _, values in point:
            point_vars |= _fill(values.get("vars") or {}, variables, where)
        point_vars = _resolve(point_vars, where)
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


def _resolve(variables: dict, where: str) -> dict:
    """vars may use other vars: `corpus_path: "{data_dir}/nltk/state_union.zip"`."""
    resolved = dict(variables)
    for _ in range(5):  # a var inside a var inside a var ... (no cycles in practice)
        resolved |= _fill({k: v for k, v in resolved.items() if k != "data_dir"}, resolved,
                          where)  # fmt: skip
    return resolved


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
