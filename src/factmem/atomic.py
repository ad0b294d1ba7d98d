"""Atomic file writes: a reader (or a resumed run) never sees a half-written file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def crash_point(path: Path | str) -> None:
    """Fault injection for the crash tests (tests/test_crash.py), as databases test theirs.

    FACTMEM_CRASH_LOG=FILE: every write passing here appends its path to FILE.
    FACTMEM_CRASH_AT=TEXT: the first write whose path contains TEXT kills this process with
    SIGKILL, halfway through (a file half written, a folder filled but not yet renamed).
    FACTMEM_PAUSE_AT=TEXT:SECONDS: such a write sleeps instead, so that a second process
    deterministically meets this one mid-stage (tests/test_concurrency.py).
    None is set outside those tests; then this costs a few dictionary lookups.
    """
    trace = os.environ.get("FACTMEM_CRASH_LOG")
    if trace:
        with open(trace, "a", encoding="utf-8") as handle:
            handle.write(f"{path}\n")
    target = os.environ.get("FACTMEM_CRASH_AT")
    if target and target in str(path):
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("FACTMEM_PAUSE_AT")
    if pause:
        text, _, seconds = pause.rpartition(":")
        if text and text in str(path):
            time.sleep(float(seconds))


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give a normal file's mode
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text[: len(text) // 2])
            handle.flush()
            crash_point(path)
            handle.write(text[len(text) // 2 :])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, obj: object) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_dir_atomic(path: Path, fill: Callable[[Path], None]) -> None:
    """Let `fill(tmp_dir)` write a folder, then move it to `path` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        fill(tmp)
        crash_point(path)
        tmp.chmod(0o755)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_file_atomic(path: Path, fill: Callable[[Path], None],
                      check: Callable[[Path], None] | None = None) -> None:  # fmt: skip
    """Let `fill(tmp_file)` write a (large, binary) file, `check(tmp_file)` refuse it by
    raising, then move it to `path` in one rename: a reader never meets a cut or bad file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        fill(tmp)
        if check is not None:
            check(tmp)
        crash_point(path)
        tmp.chmod(0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
