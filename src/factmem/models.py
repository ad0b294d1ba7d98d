"""Models and tokenizers: the embedded models (GGUF -> cached HF folder, src/factmem/embedded.py),
any HF model, tiny models.

Every tokenizer factmem uses is normalised the same way: an EOS that ends each response,
and a pad token distinct from EOS, so padding can never be confused with the end of an answer.
"""

from __future__ import annotations

import inspect
import logging
import os
import platform
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from factmem.atomic import write_dir_atomic
from factmem.embedded import EMBEDDED, gguf_file
from factmem.errors import ConfigError
from factmem.gguf_tokenizers import embedded_tokenizer

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where converted models and other reusable artefacts live (env FACTMEM_CACHE)."""
    return Path(os.environ.get("FACTMEM_CACHE", Path.home() / ".cache" / "factmem"))


def resolve_model(name: str) -> str:
    """A name from a config -> something `from_pretrained` loads (local folder or hub ID)."""
    if name in EMBEDDED:
        return str(prepare_embedded(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model: {path} exists but holds no config.json (not a HF model folder)"
            )
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") != 1
    if looks_local:
        raise ConfigError(
            f"model: {name!r} is neither an existing folder nor a hub ID (owner/name); "
            f"embedded models: {', '.join(EMBEDDED)}"
        )
    return name  # a hub ID; loading needs internet or the HF cache


def prepare_embedded(name: str) -> Path:
    """Convert the embedded GGUF to a HF folder once; later calls return the cached folder."""
    spec = EMBEDDED[name]
    target = cache_dir() / "models" / spec.folder
    if (target / "config.json").is_file():
        return target
    gguf = gguf_file(name, cache_dir() / "gguf")
    log.info("converting %s to a transformers folder (once) -> %s", gguf.name, target)
    tokenizer = embedded_tokenizer(gguf, spec)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model keeps GGUF bookkeeping that save_pretrained chokes on; copy the
    # dequantized weights into a fresh model of the same config instead.
    config = gguf_model.config
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id if spec.bos_token else None
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=config.bos_token_id,
    )
    write_dir_atomic(target, lambda tmp: save_model(model, tokenizer, tmp))
    return target


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer and make sure it has an EOS and a pad token that is not the EOS."""
    # transformers 4.57.3-4.57.x warns of a Mistral regex bug for every local folder with a
    # vocabulary over 100k that it saved itself; the embedded models are not Mistral's
    # (Gemma's 262k vocabulary set it off on every load), so they say so and are not warned
    embedded = Path(path).is_relative_to(cache_dir() / "models")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, **({"fix_mistral_regex": False} if embedded else {}))
    except OSError as err:
        raise ConfigError(f"model: cannot load a tokenizer from {path!r}: {err}") from None
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"model: the tokenizer of {path} has no EOS token")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id != tokenizer.eos_token_id:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|factmem_pad|>"})
    return tokenizer


def accepts_logits_to_keep(model: PreTrainedModel) -> bool:
    """Whether the model can skip the output head for leading positions (most causal LMs)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def compute_device() -> torch.device:
    """Where models train and are scored: this process's GPU when there is one (LOCAL_RANK
    under a multi-process launch), else the CPU. FACTMEM_DEVICE (`cpu`, `cuda:1`) overrides.

    One answer for every step (training, exact match, Logit Lens, fact scores, familiarity):
    a model reloaded from a finished stage must not be scored on the CPU of a GPU machine."""
    forced = os.environ.get("FACTMEM_DEVICE")
    if forced:
        try:
            device = torch.device(forced)
        except RuntimeError as err:
            raise ConfigError(f"FACTMEM_DEVICE={forced!r}: {err}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"FACTMEM_DEVICE={forced!r}: this torch sees no CUDA device")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def device_name(device: torch.device, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The GPU's or the CPU's model name (Linux's /proc/cpuinfo, else what `platform` knows):
    two processors give slightly different numbers from one seed, and other kernel timings."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_model(path: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """Load a causal LM in fp32 (master weights; bf16 is applied by autocast), placed on
    `compute_device()`."""
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except OSError as err:
        raise ConfigError(f"model: cannot load {path!r}: {err}") from None
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(compute_device())
