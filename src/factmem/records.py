"""The records a run writes, typed, and written and read by the same code (pipeline, report,
grid, archive, analysis, tests):

    stage<k>/training.json   StageOutcome   how the stage was trained (or where it was shared from)
    stage<k>/predictions/    Prediction     one row per scored fact (read_predictions)
    stage<k>/stage.json      StageRecord    the finished stage: outcome + exact match per set
    results.json             RunResults     every finished stage's record + the accuracy matrix

The JSON keeps the field order below, so files written before these classes existed read
back unchanged (docs/results holds such files; tests/test_records.py checks it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from factmem.atomic import write_json_atomic
from factmem.errors import FactmemError

# What a prediction row holds beside its verdict when evaluation.fact_scores is on
# (factmem.fact_scores); the archive keeps them, weight- and text-free.
FACT_SCORE_FIELDS = ("contains", "gold_logprob", "first_token_rank", "lens_first_layer")
FACT_STATUSES = ("kept", "hidden", "lost")


@dataclass
class Prediction:
    """One scored example, as the pipeline writes it to predictions/<set>.jsonl (evaluation
    makes it; an archive keeps `key` instead of prompt and output: read_predictions)."""

    prompt: str
    gold: str
    answers: list[str]
    output: str
    correct: bool
    method: Literal["teacher_forced", "generated"]
    output_cut: bool = False  # generation stopped once the verdict was final: a prefix
    # fact scores (factmem.fact_scores; evaluation.fact_scores): None when not computed
    contains: bool | None = None
    gold_logprob: float | None = None
    first_token_rank: int | None = None
    lens_first_layer: int | None = None

    def to_json(self) -> dict:
        row = asdict(self)
        if self.first_token_rank is None:  # not computed: rows as before fact scores
            for name in FACT_SCORE_FIELDS:
                del row[name]
        return row


def fact_status(row: dict) -> str | None:
    """kept / hidden / lost for one prediction row, as written or archived: kept = exact
    match; hidden = not, but the gold is in the output or its first token ranks 1 under
    teacher forcing; lost = neither. None for rows scored without fact scores."""
    if row.get("correct"):
        return "kept"
    if row.get("first_token_rank") is None and row.get("contains") is None:
        return None
    if row.get("contains") or row.get("first_token_rank") == 1:
        return "hidden"
    return "lost"


def prediction_key(prompt: str) -> str:
    """The identity of a fact across runs (same prompt = same fact): what pairs a strategy's
    verdicts with its No Mixing twin's, and what an archive keeps instead of the prompt."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def replayed_fact_keys(examples: Iterable[tuple[str, dict]]) -> dict[str, list[str]]:
    """{earlier set: keys of its facts} among a stage's (prompt, meta) training examples, so
    that a report can tell the retention of replayed facts from that of the rest."""
    keys: dict[str, list[str]] = {}
    for prompt, meta in examples:
        if meta.get("kind") == "replay":
            keys.setdefault(meta["replayed_from"], []).append(prediction_key(prompt))
    return {name: sorted(found) for name, found in keys.items()}


def read_predictions(path: Path) -> dict[str, dict]:
    """{fact key: row} of a predictions file, as the pipeline writes it (prompt, output,
    correct, fact scores) or as an archive keeps it (key, correct, fact scores). A row that
    is not JSON, or has neither key nor prompt, or no verdict, is an error naming the file
    and line: a report must not pair facts it cannot name."""
    rows: dict[str, dict] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise FactmemError(f"{path}:{number}: not a JSON row ({err})") from None
        if not isinstance(row, dict) or "correct" not in row or not (
                row.get("key") or row.get("prompt")):  # fmt: skip
            raise FactmemError(f"{path}:{number}: a prediction row needs `correct` and a "
                               "`key` or `prompt`")  # fmt: skip
        rows[row.get("key") or prediction_key(row["prompt"])] = row
    return rows


def _from_json(cls, data: Any, source: Path | str):
    """`cls(**data)` with a clear error naming the file and the missing field; keys this
    version does not know (a newer factmem's) are ignored."""
    if not isinstance(data, dict):
        raise FactmemError(f"{source}: expected a JSON object, found {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as err:  # a required field is missing
        missing = sorted(n for n in names if n not in data)
        raise FactmemError(f"{source}: not a {cls.__name__} record; missing {missing} ({err})"
                           ) from None  # fmt: skip


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise FactmemError(f"{path}: not valid JSON ({err}); delete it to redo that part"
                           ) from None  # fmt: skip


class _Record:
    """JSON in the dataclass's field order, written atomically; read with a clear error."""

    def to_json(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def read(cls, path: Path):
        return cls.from_json(_read_json(path), path)

    @classmethod
    def from_json(cls, data: Any, source: Path | str):
        return _from_json(cls, data, source)


@dataclass
class StageOutcome(_Record):
    """How a stage was trained: the stop rule's outcome, the losses, the training mixture's
    statistics (examples and tokens per kind), and the run it was shared from, if any."""

    epochs: float
    steps: int
    stop_reason: str
    rule_met: bool
    wall_time_s: float
    train_tokens: int
    response_tokens: int
    loss_curve: list[dict] = field(default_factory=list)
    epoch_checks: list[dict] = field(default_factory=list)
    probe_curve: list[dict] = field(default_factory=list)
    mixture: dict = field(default_factory=dict)
    shared_from: str | None = None
    attention: dict[str, int] = field(default_factory=dict)  # kernel -> batches it trained
    device: str = ""  # where it trained: `cuda:0 (NVIDIA H200), bf16`, `cpu (<CPU model>), fp32`
    # torch's intra-op threads: a CPU stage's losses depend on them (BENCHMARKS.md, "Stages
    # side by side"), so a grid that runs stages at 1 thread says so in every record
    threads: int = 0

    def to_json(self) -> dict:
        data = asdict(self)
        if not data["device"]:  # files written before the device was recorded
            del data["device"]
        if data["shared_from"] is None:  # only a shared stage's file names its origin
            del data["shared_from"]
        if not data["attention"]:  # files written before the kernel was chosen per batch
            del data["attention"]
        if not data["threads"]:  # files written before the thread count was recorded
            del data["threads"]
        return data


@dataclass
class StageRecord(_Record):
    """One finished stage: how it was trained and exact match on every factoid set so far."""

    index: int  # 1-based, as in logs and folder names
    name: str
    dataset: str
    size: int
    fingerprint: str
    stop_rule: str | None
    stop_reason: str
    rule_met: bool
    epochs: float
    steps: int
    train_time_s: float
    eval_time_s: float
    train_tokens: int
    response_tokens: int
    tokens_per_s: float
    mixture: dict
    shared_from: str | None
    accuracy: dict[str, float]
    loss_curve: list[dict] = field(default_factory=list)
    epoch_checks: list[dict] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)
    # every file the stage finished, relative to its folder: {"rows", "sha256"} as written to
    # the run folder (archives rewrite predictions without text: they are not checked there).
    # A predictions file cut to half its rows, each still valid JSON, or a torn data.jsonl
    # would otherwise pass for finished.
    files: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        if not data["files"]:  # records written before files were listed read back unchanged
            del data["files"]
        return data


def file_digest(path: Path) -> dict:
    """What a record keeps of a finished file to tell it whole later: rows and sha256."""
    digest = hashlib.sha256()
    rows = 0
    with Path(path).open("rb") as f:
        for line in f:
            digest.update(line)
            rows += bool(line.strip())
    return {"rows": rows, "sha256": digest.hexdigest()}


@dataclass
class RunResults(_Record):
    """results.json: the run's finished stages and its accuracy matrix (rows: after stage i,
    columns: every stage's set; None where a set is not scored)."""

    name: str
    model: str
    seed: int
    stages: list[StageRecord]
    accuracy_matrix: dict
    finished: bool

    @classmethod
    def of(cls, name: str, model: str, seed: int, set_names: list[str],
           stages: list[StageRecord]) -> RunResults:  # fmt: skip
        matrix = [[record.accuracy.get(n) for n in set_names] for record in stages]
        return cls(name, model, seed, list(stages),
                   {"rows": "after stage i", "columns": set_names, "values": matrix},
                   finished=len(stages) == len(set_names))  # fmt: skip

    def to_json(self) -> dict:
        data = asdict(self)
        data["stages"] = [s.to_json() for s in self.stages]  # each stage as its own file has it
        return data

    @classmethod
    def from_json(cls, data: Any, source: Path | str) -> RunResults:
        results = _from_json(cls, data, source)
        if not isinstance(results.stages, list):
            raise FactmemError(f"{source}: `stages` is not a list")
        results.stages = [StageRecord.from_json(s, f"{source}: stages[{i}]")
                          for i, s in enumerate(results.stages)]  # fmt: skip
        return results

    def set_accuracy(self, stage: int, set_name: str) -> float | None:
        """Exact match on `set_name` after stage `stage` (1-based), or None if not scored."""
        return self.stages[stage - 1].accuracy.get(set_name)
