"""What a grid will cost before it is paid for: stage trainings after sharing, tokens per
stage, accelerator-hours and memory per accelerator (`factmem grid GRID --dry-run --gpu H100`).

How it is computed (stated in the printed plan too):
- tokens of a stage = epochs x the tokens of one pass over its training mixture (factoids,
  replay, mixing), counted with the embedded model's tokenizer on a sample of each kind (the
  paper's Llama-3 tokenizer is on the hub; SmolLM2's splits English into a similar number of
  tokens). Epochs: `stop.epochs`, or the cap `stop.max_epochs` of a loss rule (an upper bound).
- training FLOPs = 6 x parameters x tokens (forward + backward of a dense decoder, Kaplan et
  al. 2020; attention's quadratic term is small at these lengths and left out).
- hours = FLOPs / (peak FLOP/s x MFU x devices); MFU 0.35 by default, what FSDP reaches on
  A100/H100 for 8B models (Llama-recipes report 0.3-0.5).
- memory per device, FSDP full shard, bf16 compute with fp32 master weights and AdamW:
  16 bytes x parameters / devices (weights, gradients, Adam's two moments), + one layer's
  bf16 weights gathered, + activations of a micro-batch (34 x sequence x hidden bytes per
  layer, Korthikanti et al. 2022, with flash attention) + fp32 logits (sequence x vocabulary).
The same formula with a CPU's measured FLOP/s predicts this machine's stage times: see
scripts/check_estimate.py and docs/scale.md.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from factmem.config import ExperimentConfig, MixingConfig
from factmem.data.example import Example, encode_example
from factmem.data.registry import load_examples
from factmem.errors import ConfigError, FactmemError
from factmem.grid.plan import stage_finished
from factmem.layout import runs_under
from factmem.markdown import markdown_table
from factmem.mixing import (
    generic_stream,
    mixing_count,
    mixing_source,
    random_word_stream,
    replay_count,
)
from factmem.models import load_tokenizer, resolve_model
from factmem.records import RunResults, StageOutcome

# Peak dense bf16 FLOP/s (vendor datasheets, without sparsity).
DEVICES = {"A100": 312e12, "H100": 989e12, "L40S": 362e12, "A10G": 125e12}

# Models whose shape is known without the hub (the paper's; model cards / config.json).
KNOWN_MODELS = {
    "meta-llama/Meta-Llama-3-8B": {"parameters": 8.03e9, "hidden": 4096, "layers": 32,
                                   "vocabulary": 128256},  # fmt: skip
}


@dataclass
class ModelShape:
    parameters: float
    hidden: int
    layers: int
    vocabulary: int


@dataclass
class StageCost:
    run: str
    stage: int  # 1-based
    dataset: str
    examples: int
    epochs: int
    tokens_per_epoch: int
    longest: int  # tokens of the longest example (the activation memory's sequence)

    @property
    def tokens(self) -> int:
        return self.epochs * self.tokens_per_epoch


def model_shape(model: str) -> ModelShape:
    """The model's parameter count and shape: from its config (local folder, embedded model,
    or the hub), else from KNOWN_MODELS."""
    if model in KNOWN_MODELS:
        return ModelShape(**KNOWN_MODELS[model])
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(resolve_model(model))
    except OSError as err:
        raise ConfigError(f"model {model!r}: cannot read its config to size it ({err}); "
                          f"known offline: {', '.join(KNOWN_MODELS)}") from None  # fmt: skip
    with torch.device("meta"):  # shapes only, no memory
        parameters = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    return ModelShape(parameters, config.hidden_size, config.num_hidden_layers, config.vocab_size)


def _mean_tokens(tokenizer, examples: list[Example], sample: int = 64) -> tuple[float, int]:
    lengths = [len(encode_example(tokenizer, e)["input_ids"]) for e in examples[:sample]]
    return (statistics.fmean(lengths), max(lengths)) if lengths else (0.0, 0)


def _mixing_sample(cfg: MixingConfig, count: int, seed: str) -> list[Example]:
    """Mixing examples to count tokens on: built for real where that is cheap (random words,
    a local corpus); passages of a hub corpus or written by the model are stood in for by
    random words as many as prefix + continuation (rarer words: an overestimate, by ~1.5x
    against the state_union speeches, scripts/check_estimate.py)."""
    if cfg.source == "generic" and cfg.corpus == "local":
        return list(itertools.islice(generic_stream(count, seed, cfg, ""), count))
    words = mixing_source(cfg).words(cfg)
    stream = random_word_stream(seed, cfg.model_copy(update={"words": words}))
    return [next(stream) for _ in range(count)]


@functools.lru_cache(maxsize=4096)
def _sample(dataset: str, size: int | None, seed: int, path: str | None, options: str
            ) -> list[Example]:  # fmt: skip
    """Examples to count tokens on; the runs of a grid ask for the same ones many times."""
    return load_examples(dataset, size, seed, path, json.loads(options))


def stage_costs(config: ExperimentConfig, tokenizer, run: str = "") -> list[StageCost]:
    """Tokens of every trained stage of one run (no model is loaded, no familiarity judged:
    the unfiltered set stands in for the unfamiliar one, same kind of facts)."""
    costs, sets = [], []
    for index, stage in enumerate(config.stages):
        size = stage.size
        options = json.dumps(stage.options, sort_keys=True)  # one cache key per option set
        examples = _sample(stage.dataset, min(size or 64, 64), config.seed, stage.path, options)
        count = size if size is not None else len(_sample(
            stage.dataset, None, config.seed, stage.path, options))  # fmt: skip
        mean, longest = _mean_tokens(tokenizer, examples)
        sets.append((count, mean, longest))  # counted once; later stages replay from it
        if not stage.train:
            continue
        tokens, n = mean * count, count
        if stage.replay is not None:
            for earlier_count, earlier_mean, earlier_longest in sets[:index]:
                k = replay_count(earlier_count, stage.replay.fraction)
                tokens, n = tokens + k * earlier_mean, n + k
                longest = max(longest, earlier_longest)
        if stage.mixing is not None:
            k = mixing_count(count, stage.mixing.ratio)
            mixed = _mixing_sample(stage.mixing, min(k, 32), f"estimate-{index}")
            mix_mean, mix_longest = _mean_tokens(tokenizer, mixed)
            tokens, n = tokens + k * mix_mean, n + k
            longest = max(longest, mix_longest)
        stop = stage.stop
        epochs = stop.epochs if stop.epochs is not None else stop.max_epochs
        if epochs is None:
            raise ConfigError(f"{run} stage {index + 1}: a loss rule without max_epochs has no "
                              "upper bound to plan for; set stop.max_epochs")  # fmt: skip
        costs.append(StageCost(run, index + 1, stage.dataset, n, int(math.ceil(epochs)),
                               round(tokens), longest))  # fmt: skip
    return costs


def training_flops(shape: ModelShape, tokens: float) -> float:
    return 6.0 * shape.parameters * tokens


def memory_per_device(shape: ModelShape, devices: int, micro_batch: int, sequence: int) -> float:
    """Bytes per device under FSDP full shard with bf16 compute (see the module docstring)."""
    states = 16.0 * shape.parameters / devices
    gathered_layer = 2.0 * shape.parameters / shape.layers
    activations = 34.0 * sequence * micro_batch * shape.hidden * shape.layers
    logits = 4.0 * sequence * micro_batch * shape.vocabulary
    return states + gathered_layer + activations + logits


def _counting_tokenizer(model: str):
    """The model's own tokenizer where it is here (a folder, the embedded model), else the
    embedded SmolLM2's (a hub model offline)."""
    if model not in KNOWN_MODELS:
        try:
            return load_tokenizer(resolve_model(model))
        except (OSError, ConfigError):
            pass
    return load_tokenizer(resolve_model("smollm2-135m"))


def _distinct_costs(grid, skip_finished: bool = False) -> tuple[list[StageCost], ModelShape]:
    """One StageCost per distinct stage training of the grid (the run that trains it), and
    the model's shape; `skip_finished`: leave out stages already finished in its folder."""
    first = grid.runs[0].config
    shape = model_shape(first.model)
    tokenizer = _counting_tokenizer(first.model)
    trained = {j.fingerprint: j for j in grid.jobs() if j.trains and j.owner == (j.run, j.stage)}
    costs, by_run = [], {}
    for job in trained.values():
        run = grid.runs[job.run]
        if skip_finished and _trained_already(run, job.stage):
            continue
        if run.name not in by_run:
            by_run[run.name] = {c.stage: c for c in stage_costs(run.config, tokenizer, run.name)}
        costs.append(by_run[run.name][job.stage + 1])
    return costs, shape


def _trained_already(run, index: int) -> bool:
    """Stage `index` of the run is finished, or a finished stage with its fingerprint waits
    in a sibling run or grid to be shared (the pipeline's own lookup)."""
    from factmem.pipeline import shared_stage

    if stage_finished(run, index):
        return True
    return run.config.share_stages and shared_stage(
        run.folder.stage(index + 1), run.config.fingerprint(index)) is not None  # fmt: skip


def _cost_table(grid, costs: list[StageCost], shape: ModelShape, what: str) -> list[str]:
    rows = [[c.run, str(c.stage), c.dataset, str(c.examples), str(c.epochs),
             f"{c.tokens_per_epoch:,}", f"{c.tokens:,}"] for c in costs]  # fmt: skip
    return [
        f"cost of grid {grid.name}: {len(costs)} distinct stage trainings {what}, model "
        f"{grid.runs[0].config.model} ({shape.parameters / 1e9:.2f}B parameters)",
        "",
        markdown_table(["run (trains it)", "stage", "dataset", "examples", "epochs",
                        "tokens/epoch", "tokens"], rows),  # fmt: skip
        "",
    ]


def grid_estimate(grid, device: str = "H100", devices: int = 8, mfu: float = 0.35) -> str:
    """The printed plan: one row per distinct stage training, then the totals."""
    if device not in DEVICES:
        raise ConfigError(f"--gpu {device!r}: known {', '.join(DEVICES)}")
    first = grid.runs[0].config
    costs, shape = _distinct_costs(grid)
    tokens = sum(c.tokens for c in costs)
    flops = training_flops(shape, tokens)
    hours = flops / (DEVICES[device] * mfu * devices) / 3600
    micro = first.training.micro_batch_size or first.training.batch_size
    micro = max(1, micro // devices) if first.training.micro_batch_size is None else micro
    longest = max(c.longest for c in costs)
    memory = memory_per_device(shape, devices, micro, longest)
    what = f"(of {sum(1 for j in grid.jobs() if j.trains)} trained stages)"
    return "\n".join(_cost_table(grid, costs, shape, what) + [
        f"training tokens: {tokens:,}; FLOPs = 6 x parameters x tokens = {flops:.3g}",
        f"{device} x {devices} at {mfu:.0%} MFU ({DEVICES[device] / 1e12:.0f} TFLOP/s peak "
        f"bf16): {hours:.2f} h wall, {hours * devices:.1f} {device}-hours",
        f"memory per {device}, FSDP full shard, micro-batch {micro} x {longest} tokens: "
        f"{memory / 2**30:.1f} GiB (16 B/parameter / {devices} + one gathered layer + "
        "activations + fp32 logits)",
        "Upper bounds where a loss rule stops earlier; evaluation (one forward pass per fact "
        "and stage) is not counted. How: src/factmem/estimate.py.",
    ])


def measured_rates(folders: list[Path], device: str, parameters: float) -> list[float]:
    """Training FLOP/s (6 x parameters x tokens / seconds) of every stage trained on `device`
    (a stage record's device text: processor and precision) in the runs under `folders`."""
    rates, seen = [], set()
    for folder in folders:
        for run in runs_under(folder, 3) if folder.is_dir() else []:
            for stage in run.stages():
                try:
                    outcome = StageOutcome.read(stage.training)
                except (FactmemError, OSError):
                    continue
                once = (outcome.train_tokens, outcome.wall_time_s)  # an archived copy
                if outcome.device == device and not outcome.shared_from and once not in seen \
                        and outcome.wall_time_s > 0 and outcome.train_tokens:  # fmt: skip
                    seen.add(once)
                    rates.append(training_flops(ModelShape(parameters, 0, 1, 0),
                                                outcome.train_tokens) / outcome.wall_time_s)
    return rates


@dataclass
class HereEstimate:
    device: str  # this machine's device text, as a stage record names it
    costs: list[StageCost]  # the stage trainings left
    shape: ModelShape
    rates: list[float]  # training FLOP/s of the stages recorded as trained here

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.costs)

    @property
    def flops(self) -> float:
        return training_flops(self.shape, self.tokens)

    @property
    def seconds(self) -> float | None:
        return self.flops / statistics.median(self.rates) if self.rates else None


def estimate_here(grid, folders: list[Path]) -> HereEstimate:
    """What is left of the grid to train (stages neither finished nor waiting to be shared)
    and the speeds that stages recorded as trained on this processor and precision reached
    (runs under `folders`: the runs root and the archive)."""
    import torch

    from factmem.models import compute_device
    from factmem.training import device_text, use_bf16

    costs, shape = _distinct_costs(grid, skip_finished=True)
    here = device_text(torch.device(compute_device()), use_bf16(grid.runs[0].config.training.bf16))
    return HereEstimate(here, costs, shape, measured_rates(folders, here, shape.parameters))


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def grid_estimate_here(grid, folders: list[Path]) -> str:
    """The printed plan of `factmem grid --dry-run --here`: the trainings left, then the time
    at the median measured speed, with the range the slowest and fastest stage give."""
    found = estimate_here(grid, folders)
    lines = _cost_table(grid, found.costs, found.shape, "left to train here")
    lines.append(f"training tokens: {found.tokens:,}; FLOPs = 6 x parameters x tokens = "
                 f"{found.flops:.3g}")  # fmt: skip
    if found.seconds is None:
        lines.append(f"no stage recorded as trained on {found.device} under "
                     f"{', '.join(map(str, folders))}: train one here first (a run records "
                     "its processor), then ask again")  # fmt: skip
        return "\n".join(lines)
    rate, n = statistics.median(found.rates), len(found.rates)
    lines += [
        f"here ({found.device}): {_duration(found.seconds)} of training at "
        f"{rate / 1e9:.0f} GFLOP/s, the median of {n} stage{'s' * (n > 1)} recorded as "
        f"trained here" + ("" if n == 1 else f" ({_duration(found.flops / max(found.rates))} "
                           f"at the fastest, {_duration(found.flops / min(found.rates))} at "
                           "the slowest)"),
        "Upper bounds where a stop rule may end a stage earlier (its cap counted); stages "
        "finished, or found finished in a sibling run or grid to share, are left out; "
        "evaluation is not counted. How: src/factmem/estimate.py.",
    ]
    return "\n".join(lines)


def cpu_check(records: list[dict], parameters: float) -> list[dict]:
    """Each archived stage's time predicted from the CPU FLOP/s of the first stage of the
    list (same formula): [{stage, tokens, measured_s, predicted_s, ratio}]."""
    if not records:
        return []
    rate = training_flops(ModelShape(parameters, 0, 1, 0), records[0]["train_tokens"]) / \
        records[0]["train_time_s"]  # fmt: skip
    out = []
    for r in records:
        predicted = training_flops(ModelShape(parameters, 0, 1, 0), r["train_tokens"]) / rate
        out.append({"stage": r["stage"], "tokens": r["train_tokens"],
                    "measured_s": r["train_time_s"], "predicted_s": round(predicted, 1),
                    "ratio": round(r["train_time_s"] / predicted, 2)})  # fmt: skip
    return out


def archived_stage_records(folder: Path) -> list[dict]:
    """Every trained (not shared) stage record of the finished runs under `folder`."""
    out = []
    for run in runs_under(folder, 3):
        for record in RunResults.read(run.results).stages:
            if record.shared_from or not record.train_time_s:
                continue
            out.append({"stage": f"{run.path.name}/stage{record.index}",
                        "train_tokens": record.train_tokens,
                        "train_time_s": record.train_time_s})  # fmt: skip
    return out
