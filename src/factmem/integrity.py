"""Is a finished stage's output whole? Checked before it is skipped, resumed from or shared.

factmem writes atomically, but a disk can fill, a copy can be cut short, a user can edit by
hand, and shared stages are hard links: one damaged file would damage every run that reuses
it. So nothing is reused on the strength of a marker file alone: the JSON records must parse
and every safetensors file of the model must open with its whole header covered (safetensors
checks that the tensors it declares fit in the file, which a truncated file fails).
"""

from __future__ import annotations

import json
from pathlib import Path

from factmem.layout import StageFolder


def json_problem(path: Path) -> str | None:
    """Why `path` is not a readable JSON file (None: it is)."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{path} is missing"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"{path} is not valid JSON ({err})"
    return None


def model_problem(folder: Path) -> str | None:
    """Why the saved model in `folder` cannot be used (None: it can)."""
    if not folder.is_dir():
        return f"{folder} is missing"
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return f"{folder} holds no *.safetensors file"
    for file in files:
        problem = _safetensors_problem(file)
        if problem:
            return problem
    return json_problem(folder / "config.json")


def _safetensors_problem(file: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            handle.keys()
    except Exception as err:  # safetensors raises its own error types for bad files
        return f"{file} is damaged ({err})"
    return None


def stage_problem(stage_dir: StageFolder, trained: bool) -> str | None:
    """Why a stage folder that looks finished cannot be reused (None: it can)."""
    for record in (stage_dir.record, stage_dir.training):
        problem = json_problem(record)
        if problem:
            return problem
    problem = files_problem(stage_dir)
    if problem:
        return problem
    return model_problem(stage_dir.model) if trained else None


def files_problem(stage_dir: StageFolder) -> str | None:
    """Why a file the stage record lists (predictions, data.jsonl) is not as it was written:
    missing, another number of rows, another sha256 (None: all whole, or none listed)."""
    from factmem.records import file_digest

    listed = json.loads(stage_dir.record.read_text(encoding="utf-8")).get("files") or {}
    for relative, expected in listed.items():
        path = stage_dir.path / relative
        if not path.is_file():
            return f"{path} is missing (its stage record lists it)"
        found = file_digest(path)
        if found["rows"] != expected.get("rows"):
            return (f"{path} has {found['rows']} rows; its stage record says "
                    f"{expected.get('rows')} (cut short or appended to)")
        if found["sha256"] != expected.get("sha256"):
            return f"{path} differs from the file its stage record lists (sha256)"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why a trainer checkpoint cannot be resumed from (None: it can). transformers writes
    a checkpoint file by file, trainer_state.json last: a save cut short lacks it, or has it
    cut short."""
    problem = json_problem(folder / "trainer_state.json")
    if problem:
        return problem
    for file in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(file)
        if problem:
            return problem
    return None
