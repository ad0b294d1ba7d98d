"""Tokenizers of the embedded GGUF models, made right where transformers' GGUF import is wrong.

byte_level_bpe (SmolLM2): the import makes `<|im_start|>` the EOS, has no pad token, prepends
a BOS, and adds sentencepiece-style decoder steps to a byte-level BPE. We keep its vocabulary
and merges and rebuild the rest as the original SmolLM2 tokenizer has it.

sentencepiece_bpe (Gemma 3): the import builds a Unigram model over the GGUF's scores, but
Gemma's tokenizer is SentencePiece BPE ("Hello world" -> `Hello ▁w or ld`; 2.5 nats a
character on plain prose against 0.5 with the right one, tests/test_gemma.py). A GGUF keeps
the pieces, their scores and types but not the merges; we build the tokenizer exactly as
transformers' own GemmaConverter builds it from the SentencePiece model file (which the GGUF
stands in for): merges from each piece's two-piece splits, ranked by the piece's score
(transformers' generate_merges), byte fallback, spaces as ▁, no dummy prefix, control pieces
special and user-defined pieces (runs of spaces and newlines) matched before normalising,
BOS before every prompt.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from factmem.embedded import EmbeddedModel

# SentencePiece piece types (sentencepiece_model.proto): control and user-defined pieces are
# added tokens; control ones are special.
_CONTROL, _USER_DEFINED = 3, 4


def embedded_tokenizer(gguf: Path, spec: EmbeddedModel) -> PreTrainedTokenizerFast:
    """The GGUF's tokenizer, put right for `spec`."""
    if spec.tokenizer == "sentencepiece_bpe":
        return _sentencepiece_bpe(gguf, spec)
    return _byte_level_bpe(gguf, spec)


def _byte_level_bpe(gguf: Path, spec: EmbeddedModel) -> PreTrainedTokenizerFast:
    from tokenizers import decoders, processors

    imported = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    backend = imported.backend_tokenizer
    backend.post_processor = processors.ByteLevel(trim_offsets=False)  # no BOS
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        unk_token=spec.pad_token,
        chat_template=imported.chat_template,
        model_max_length=8192,
    )


def gguf_vocabulary(gguf: Path) -> tuple[list[str], list[float], list[int]]:
    """The GGUF's pieces, their scores and their SentencePiece types, in id order."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields

    def values(key: str) -> list:
        field = fields[key]
        return [field.parts[i] for i in field.data]

    pieces = [bytes(p).decode("utf-8") for p in values("tokenizer.ggml.tokens")]
    scores = [float(s[0]) for s in values("tokenizer.ggml.scores")]
    types = [int(t[0]) for t in values("tokenizer.ggml.token_type")]
    if not len(pieces) == len(scores) == len(types):
        raise ValueError(f"{gguf}: {len(pieces)} pieces, {len(scores)} scores, {len(types)} types")
    return pieces, scores, types


def _sentencepiece_bpe(gguf: Path, spec: EmbeddedModel) -> PreTrainedTokenizerFast:
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.processors import TemplateProcessing
    from transformers.convert_slow_tokenizer import generate_merges

    pieces, scores, types = gguf_vocabulary(gguf)
    vocab = {piece: i for i, piece in enumerate(pieces)}
    merge_vocab = dict(vocab)
    if "\t" not in merge_vocab and "<0x09>" in vocab:  # as GemmaSentencePieceExtractor does
        merge_vocab["\t"] = vocab["<0x09>"]
    merges = generate_merges(merge_vocab, list(zip(pieces, scores, strict=True)))
    tokenizer = Tokenizer(BPE(vocab, merges, unk_token="<unk>", fuse_unk=True,
                              byte_fallback=True, dropout=None))  # fmt: skip
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                           decoders.Fuse()])  # fmt: skip
    tokenizer.add_tokens([AddedToken(p, normalized=False, special=t == _CONTROL)
                          for p, t in zip(pieces, types, strict=True)
                          if t in (_CONTROL, _USER_DEFINED)])  # fmt: skip
    if spec.bos_token is not None:
        bos = (spec.bos_token, vocab[spec.bos_token])
        tokenizer.post_processor = TemplateProcessing(single=f"{bos[0]} $A",
                                                      pair=f"{bos[0]} $A {bos[0]} $B",
                                                      special_tokens=[bos])  # fmt: skip
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=spec.bos_token,
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        unk_token="<unk>",
        model_max_length=32768,
    )
