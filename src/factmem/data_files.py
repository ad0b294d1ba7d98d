"""The local files a run reads, and digests of their content.

A stage's fingerprint names each data path as it was spelled (`../shared/data/popqa/...`),
so the same files under another `--data-dir` make other fingerprints. The archive records a
digest of every file a run read; a grid that finds a run archived under another spelling
compares digests: the same bytes count as the same run (skipped), other bytes or no record
are refused by name (grid/status.py). Hand-written because what is digested is ours: a
file, or every file of a folder (LAMA's T-REx folder), by relative name and content.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from factmem.config import ExperimentConfig


def data_paths(config: ExperimentConfig) -> Iterator[tuple[str, str]]:
    """(field, path) of every local file or folder a run's stages would read."""
    for k, stage in enumerate(config.stages):
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


def digest(path: str | Path) -> str | None:
    """sha256 of a file's bytes, or of a folder's files (relative names and bytes, in name
    order, hidden files left out); None when nothing is there (a hub ID, a missing file)."""
    path = Path(path)
    if path.is_file():
        return _file_digest(str(path.resolve()), *_stamp(path))
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        h.update(relative.as_posix().encode() + b"\0")
        h.update(_file_digest(str(file.resolve()), *_stamp(file)).encode() + b"\0")
    return h.hexdigest()


def _stamp(file: Path) -> tuple[int, int]:
    stat = file.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4096)
def _file_digest(resolved: str, mtime_ns: int, size: int) -> str:
    """Cached by path, time and size: a grid asks about the same files for every run."""
    h = hashlib.sha256()
    with open(resolved, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_digests(config: ExperimentConfig, base: Path | None = None) -> dict[str, dict]:
    """{field: {"path", "sha256"}} of each data path that exists, read relative to `base`
    (default: the working directory, where the run read them)."""
    recorded = {}
    for field_name, path in data_paths(config):
        found = digest(path if base is None or os.path.isabs(path) else base / path)
        if found is not None:
            recorded[field_name] = {"path": path, "sha256": found}
    return recorded
