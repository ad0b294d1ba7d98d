"""Analyses of finished runs: Logit Lens of a stage's model, gradient alignment at a stage.

    factmem lens RUN [RUN ...] [--stage K] [--set NAME] [-n 100]   -> LoF table + figure
    factmem gradients RUN [--stage K] [-n 32] [--mix-from RUN]     -> cosine table

Each result is cached in the run's stage directory (lens_<set>.json, gradients.json),
written atomically, so a rerun or a report reads it instead of recomputing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from factmem.atomic import write_json_atomic
from factmem.config import load_config
from factmem.data.example import Example
from factmem.errors import FactmemError
from factmem.gradients import gradient_cosines, loss_gradient
from factmem.layout import RunFolder
from factmem.lens import lens_hits
from factmem.markdown import markdown_table
from factmem.models import load_model, load_tokenizer


def stage_facts(run_dir: Path, stage: int, kinds: tuple[str, ...] = ("factoid",)) -> list[Example]:
    """The examples of stage `stage` (1-based) as it trained on them, of the given kinds."""
    data = RunFolder(run_dir).stage(stage).data
    if not data.is_file():
        raise FactmemError(f"{data} not found: is stage {stage} of {run_dir} finished?")
    rows = [json.loads(line) for line in data.open()]
    return [Example(r["prompt"], r["response"], tuple(r.get("answers") or ()),
                    meta=r.get("meta") or {},
                    history=tuple(tuple(t) for t in r.get("history") or ()))
            for r in rows if (r.get("meta") or {}).get("kind", "factoid") in kinds]  # fmt: skip


def stage_model(run_dir: Path, stage: int | None) -> tuple[int, str]:
    """(stage number, model folder): the given stage's, else the last trained stage's."""
    config = load_config(RunFolder(run_dir).config)
    trained = [i + 1 for i, s in enumerate(config.stages) if s.train]
    stage = stage or trained[-1]
    if stage not in trained:
        raise FactmemError(f"{run_dir}: stage {stage} trained nothing; trained: {trained}")
    model = RunFolder(run_dir).stage(stage).model
    if not model.is_dir():
        raise FactmemError(f"{model} not found: is stage {stage} of {run_dir} finished?")
    return stage, str(model)


def run_lens(run_dir: Path, stage: int | None = None, set_name: str | None = None,
             n: int = 100, top_k: int = 10) -> dict:  # fmt: skip
    """Logit Lens of stage `stage`'s model on the first `n` facts of a set (default D_A)."""
    config = load_config(RunFolder(run_dir).config)
    stage, model_dir = stage_model(run_dir, stage)
    names = [config.stage_name(i) for i in range(len(config.stages))]
    set_name = set_name or names[0]
    if set_name not in names:
        raise FactmemError(f"{run_dir}: no set {set_name!r}; sets: {', '.join(names)}")
    folder = RunFolder(run_dir).stage(stage)
    cache = folder.lens(set_name)
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached["n"] == n and cached["top_k"] == top_k:
            return cached
    facts = stage_facts(run_dir, names.index(set_name) + 1)[:n]
    tokenizer = load_tokenizer(model_dir)
    result = lens_hits(load_model(model_dir, tokenizer), tokenizer, facts, top_k)
    record = {
        "run": str(run_dir), "stage": stage, "set": set_name, "n": n, "top_k": top_k,
        "examples": len(facts), "frequency": result.frequency(), **result.summary(),
        "accuracy": _accuracy(folder.predictions(set_name), facts),
        "first_layers": result.first_layers(),
    }  # fmt: skip
    write_json_atomic(cache, record)
    return record


def _accuracy(predictions: Path, facts: list[Example]) -> float | None:
    """Exact match of the stage's model on these facts, from its saved predictions."""
    if not predictions.is_file():
        return None
    verdicts = {}
    for line in predictions.open():
        row = json.loads(line)
        verdicts[row["prompt"]] = row["correct"]
    known = [verdicts[f.prompt] for f in facts if f.prompt in verdicts]
    return sum(known) / len(known) if known else None


def run_gradients(run_dir: Path, stage: int = 1, n: int = 32, mix_from: Path | None = None,
                  seed: int = 0) -> dict:  # fmt: skip
    """Cosines between the loss gradients of D_A, D_B and D_B + D_M at stage `stage`'s model.

    D_A: the first `n` facts of stage 1; D_B: of stage `stage` + 1; D_B + D_M: `n` examples
    drawn (seeded) from stage `stage` + 1's training mixture -- of this run, or of
    `mix_from` (e.g. a Random/Generic run, to ask how its mixture would pull on this model).
    """
    stage, model_dir = stage_model(run_dir, stage)
    cache = RunFolder(run_dir).stage(stage).gradients
    key = {"n": n, "mix_from": str(mix_from) if mix_from else None, "seed": seed}
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached["key"] == key:
            return cached
    sets = {"D_A": stage_facts(run_dir, 1)[:n], "D_B": stage_facts(run_dir, stage + 1)[:n]}
    mixture = stage_facts(mix_from or run_dir, stage + 1, ("factoid", "mixing", "replay"))
    if len(mixture) > len(sets["D_B"]) or mix_from:
        sets["D_B+D_M"] = random.Random(seed).sample(mixture, min(n, len(mixture)))
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, tokenizer)
    grads = {name: loss_gradient(model, tokenizer, examples) for name, examples in sets.items()}
    pairs = [("D_A", other) for other in sets if other != "D_A"]
    record = {
        "run": str(run_dir), "stage": stage, "key": key,
        "examples": {name: len(examples) for name, examples in sets.items()},
        "cosines": {f"{a} vs {b}": gradient_cosines(grads[a], grads[b]) for a, b in pairs},
    }  # fmt: skip
    write_json_atomic(cache, record)
    return record


def lens_table(records: list[dict]) -> str:
    """Markdown: layer of first occurrence (mean, std), share found, exact match per run."""
    header = ["run", "stage", "set", "n", "first layer: mean", "std", "found in top-k",
              "exact match"]  # fmt: skip
    rows = [[Path(r["run"]).name, r["stage"], r["set"], r["examples"],
             f"{r['first_layer_mean']:.1f}", f"{r['first_layer_std']:.1f}",
             f"{100 * r['found']:.0f}%",
             f"{100 * r['accuracy']:.1f}%" if r["accuracy"] is not None else "-"]
            for r in records]  # fmt: skip
    return markdown_table(header, rows)


def lens_figure(records: list[dict], path: Path) -> Path:
    """Per-layer hit frequency of several runs on one figure (the paper's Figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        layers = range(1, len(r["frequency"]) + 1)
        ax.plot(layers, r["frequency"], marker=".",
                label=f"{Path(r['run']).name} (stage {r['stage']}, {r['set']})")  # fmt: skip
    ax.set_xlabel("layer")
    ax.set_ylabel(f"share of facts with the answer in the top-{records[0]['top_k']}")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def gradients_table(records: list[dict]) -> str:
    """Markdown: overall cosine and the per-layer range, per run and pair of sets."""
    rows = []
    for r in records:
        for pair, c in r["cosines"].items():
            layers = [v for g, v in c["groups"].items() if g.startswith("layer.")]
            rows.append([Path(r["run"]).name, r["stage"], pair, f"{c['overall']:.4f}",
                         f"{min(layers):.4f}", f"{max(layers):.4f}"])  # fmt: skip
    header = ["run", "stage", "pair", "overall cosine", "min layer cosine", "max layer cosine"]
    return markdown_table(header, rows)
