"""Weight-free archives of finished runs: what a grid measured, kept after the machine is gone.

A run folder holds gigabytes of checkpoints beside a few kilobytes of results. An archive
keeps only the results, in the same layout, so every reader of run folders reads it too:

    <archive>/<grid>/<run>/config.yaml, results.json, run.log, archive.json
    <archive>/<grid>/<run>/stage<k>/stage.json, training.json, fingerprint
    <archive>/<grid>/<run>/stage<k>/predictions/<set>.jsonl

`factmem report ARCHIVE` reads it like a runs folder; `factmem grid GRID --archive ARCHIVE`
skips the runs already in it and archives each run it finishes, so a grid of many hours can
be completed over several sittings, on several machines, and its report rebuilt anywhere.

archive.json records where and when, and the sha256 of each data file the run read: a grid
that spells --data-dir otherwise (another machine's folder) recognises the run by its files.

By default predictions keep a hash of each prompt and the verdict, not the text: enough for
the paired statistics (facts are matched by that hash), small, and free of the datasets'
text, which a repository may not be allowed to redistribute. `with_text=True` keeps it all.
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

from factmem.atomic import write_json_atomic, write_jsonl_atomic, write_text_atomic
from factmem.config import load_config
from factmem.data_files import data_digests
from factmem.errors import FactmemError
from factmem.layout import RunFolder, StageFolder, runs_under
from factmem.records import (  # noqa: F401  (prediction_key, replayed_fact_keys: kept importable here)
    FACT_SCORE_FIELDS,
    RunResults,
    StageOutcome,
    StageRecord,
    prediction_key,
    read_predictions,
    replayed_fact_keys,
)

MARKER = "archive.json"


def is_finished(run_dir: Path) -> bool:
    results = RunFolder(run_dir).results
    if not results.is_file():
        return False
    try:
        return RunResults.read(results).finished
    except FactmemError:  # torn or foreign: not a finished run (the report says why)
        return False


def archive_run(run_dir: Path, dest: Path, with_text: bool = False) -> Path:
    """Copy a finished run's results (no weights) to `dest`; returns `dest`."""
    if not is_finished(run_dir):
        raise FactmemError(f"{run_dir}: not a finished run (results.json with finished: true)")
    source, tmp = RunFolder(run_dir), RunFolder(dest.with_name(f".{dest.name}.partial"))
    shutil.rmtree(tmp.path, ignore_errors=True)
    tmp.path.mkdir(parents=True)
    for file, copy in ((source.config, tmp.config), (source.log, tmp.log)):
        if file.is_file():
            shutil.copy2(file, copy)
    stages = {stage.number: stage for stage in source.stages()}
    results = RunResults.read(source.results)
    for record in results.stages:
        _tidy_mixture(record.mixture, stages.get(record.index), with_text)
    results.write(tmp.results)
    for stage in stages.values():
        if not stage.record.is_file():
            continue
        copy = tmp.stage(stage.number)
        copy.path.mkdir()
        for file, target, kind in ((stage.record, copy.record, StageRecord),
                                   (stage.training, copy.training, StageOutcome)):  # fmt: skip
            if file.is_file():
                record = kind.read(file)
                _tidy_mixture(record.mixture, stage, with_text)
                record.write(target)
        if stage.fingerprint.is_file():
            shutil.copy2(stage.fingerprint, copy.fingerprint)
        for file in sorted(stage.predictions_dir.glob("*.jsonl")):
            if with_text:
                rows = [json.loads(line) for line in file.read_text().splitlines()
                        if line.strip()]  # fmt: skip
            else:
                rows = [{"key": key, "correct": row["correct"], "method": row.get("method"),
                         **{k: row[k] for k in FACT_SCORE_FIELDS if k in row}}
                        for key, row in read_predictions(file).items()]  # fmt: skip
            write_jsonl_atomic(copy.predictions(file.stem), rows)
    write_json_atomic(tmp.path / MARKER, {
        "archived_from": str(run_dir),
        "archived_at": _now(),
        "with_text": with_text,
        "data": _read_data_digests(source),
    })  # fmt: skip
    if dest.exists():
        shutil.rmtree(dest)
    tmp.path.replace(dest)
    return dest


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _read_data_digests(run: RunFolder, base: Path | None = None) -> dict[str, dict]:
    """Digests of the data files the run's config names, as they are now (the grid archives a
    run as it finishes, so these are the bytes it read): what lets a later grid that spells
    --data-dir otherwise recognise the run (grid/status.py). Empty when the config no
    longer loads."""
    try:
        return data_digests(load_config(run.config), base) if run.config.is_file() else {}
    except FactmemError:
        return {}


def record_data_digests(run_archive: Path, base: Path) -> dict[str, dict] | None:
    """Add the data digests to an archived run made before archives recorded them, reading
    its data paths relative to `base` (where its grid ran). Says so in archive.json: these
    are the files found there now, taken to be those the run read. None: nothing to add."""
    marker = run_archive / MARKER
    meta = json.loads(marker.read_text())
    if "data" in meta:
        return None
    found = _read_data_digests(RunFolder(run_archive), base)
    if not found:
        return None
    meta |= {"data": found, "data_digested": f"afterwards, {_now()}, from {base.resolve()}: "
             "the files found there then, taken to be those the run read"}  # fmt: skip
    write_json_atomic(marker, meta)
    return found


def record_archive_data(sources: list[Path], base: Path) -> int:
    """record_data_digests for every archived run under `sources` (an archive, a grid of it,
    or one run); returns how many gained digests."""
    added = 0
    for source in sources:
        if not source.is_dir():
            raise FactmemError(f"{source}: no such folder")
        runs = [source] if (source / MARKER).is_file() else [
            r.path for r in runs_under(source, 2) if (r.path / MARKER).is_file()]  # fmt: skip
        added += sum(record_data_digests(run, base) is not None for run in runs)
    return added


def archived_data_digests(run_archive: Path) -> dict[str, dict]:
    """The data digests an archived run records ({} for archives made before they were)."""
    try:
        return json.loads((run_archive / MARKER).read_text()).get("data") or {}
    except (OSError, ValueError):
        return {}


def fill_replayed_facts(mixture: dict, stage: StageFolder | None) -> dict:
    """`mixture` naming its replayed facts also for runs made before stage records did:
    read from the examples the stage trained on (data.jsonl), while the run folder has them."""
    if "replay" in mixture and "replayed_facts" not in mixture and stage and stage.data.is_file():
        rows = [json.loads(line) for line in stage.data.read_text().splitlines() if line.strip()]
        mixture["replayed_facts"] = replayed_fact_keys((r["prompt"], r["meta"]) for r in rows)
    return mixture


def _tidy_mixture(mixture: dict, stage: StageFolder | None, with_text: bool) -> None:
    """A stage's mixture statistics as archived: naming the replayed facts, and without the
    overlap check's quotes unless `with_text`."""
    fill_replayed_facts(mixture, stage)
    if not with_text:
        _drop_quotes(mixture)


def _drop_quotes(mixture: dict) -> None:
    """A stage's mixture statistics without the overlap check's examples, which quote
    factoid answers."""
    mixing = mixture.get("mixing") or {}
    if mixing.get("overlap_examples"):
        mixing["overlap_examples"] = [{"id": x.get("id")} for x in mixing["overlap_examples"]]


def archive_runs(sources: list[Path], out: Path, with_text: bool = False) -> list[Path]:
    """Archive every finished run under `sources` (a run, a grid folder or a runs root),
    keeping each run's path below its grid: `<out>/<grid>/<run>`."""
    made = []
    for source in sources:
        if not source.is_dir():
            raise FactmemError(f"{source}: no such folder")
        runs = [source] if is_finished(source) else [r.path for r in runs_under(source, 2)]
        for run_dir in runs:
            if not is_finished(run_dir) or (run_dir / MARKER).is_file():
                continue  # unfinished, or already an archive
            made.append(archive_run(run_dir, out / run_dir.parent.name / run_dir.name,
                                    with_text))  # fmt: skip
    write_readme(out)
    return made


def archived_fingerprints(run_archive: Path) -> list[str] | None:
    """The stage fingerprints of an archived finished run (None: not an archived run)."""
    if not (run_archive / MARKER).is_file() or not is_finished(run_archive):
        return None
    return [record.fingerprint for record in RunResults.read(RunFolder(run_archive).results).stages]


def write_readme(out: Path) -> None:
    """The archive's README: what it is, how to use it, which runs it holds."""
    write_text_atomic(out / "README.md", _readme(out))


def _readme(out: Path) -> str:
    runs = sorted(p.parent.relative_to(out) for p in out.glob(f"*/*/{MARKER}"))
    lines = [
        "# factmem archive of finished runs (no weights)\n",
        "Made by `factmem archive` or `factmem grid ... --archive`. Rebuild the report with",
        "`factmem report PATH --paper remix`, PATH being this folder (or one grid's folder in it);",
        "a grid given `--archive PATH` skips these runs.\n",
        f"{len(runs)} runs:\n",
        *[f"- {r}" for r in runs],
    ]
    return "\n".join(lines) + "\n"
