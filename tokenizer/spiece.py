"""A fast tokenizer from a SentencePiece ``spiece.model`` alone (Google's mT5 folders).

transformers reads such a file through its bundled protobuf classes, which this
environment cannot import (protobuf 6, pinned through Beam, against gencode 7); it
then falls back to tiktoken and fails.  The model file is a small protobuf, so it is
read here field by field (tokenizer.charsmap.proto_fields) and rebuilt as a
``tokenizers`` pipeline that gives SentencePiece's own ids:

* normalizer: the model's precompiled charsmap; with ``remove_extra_whitespaces``
  leading/trailing spaces dropped and runs of spaces folded (spaces only: SentencePiece
  leaves newlines to the charsmap); with ``escape_whitespaces`` " " -> "▁"; with
  ``add_dummy_prefix`` a "▁" in front (of a non-empty text);
* model: Unigram over all pieces with their scores, unknown id, byte fallback; the
  Viterbi runs over the whole normalized text, as SentencePiece's does (so pieces with
  an inner "▁" work too);
* user-defined pieces: cut out whole before the model, as SentencePiece emits them;
* post-processor: T5's ``$A </s>`` when the model has an end-of-sequence piece;
  ``<extra_id_0..N-1>`` sentinels appended after the pieces (``<extra_id_0>`` last), as
  T5Tokenizer does with ``extra_ids``;
* decoder: "▁" back to spaces, bytes back to characters, the dummy prefix dropped.

Only unigram models are supported (mT5's kind); a BPE model is a clear error.
Difference left: SentencePiece adds scores in float32, ``tokenizers`` in float64, so
two segmentations within float32 rounding of each other may be ranked differently.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from .charsmap import proto_fields

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # SentencePiece.Type
UNIGRAM = 1  # TrainerSpec.ModelType
T5_FAMILY = ("t5", "mt5", "umt5", "byt5")


@dataclass
class SpmModel:
    """The parts of a ModelProto (sentencepiece_model.proto) a tokenizer needs."""

    pieces: list[tuple[str, float, int]] = field(default_factory=list)  # piece, score, type
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    treat_whitespace_as_suffix: bool = False

    def special(self, which: str) -> str | None:
        i = getattr(self, f"{which}_id")
        return self.pieces[i][0] if 0 <= i < len(self.pieces) else None


def _int32(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value  # negative ids are 10-byte varints


def read_spm(path: str | Path) -> SpmModel:
    """Parse a SentencePiece .model file without protobuf classes."""
    m = SpmModel()
    for number, _, value in proto_fields(Path(path).read_bytes()):
        if number == 1:  # repeated SentencePiece
            piece, score, kind = "", 0.0, NORMAL
            for n, _, v in proto_fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            m.pieces.append((piece, score, kind))
        elif number == 2:  # TrainerSpec
            for n, _, v in proto_fields(value):
                if n == 3:
                    m.model_type = v
                elif n == 24:
                    m.treat_whitespace_as_suffix = bool(v)
                elif n == 35:
                    m.byte_fallback = bool(v)
                elif n in (40, 41, 42, 43):
                    setattr(m, ("unk_id", "bos_id", "eos_id", "pad_id")[n - 40], _int32(v))
        elif number == 3:  # NormalizerSpec
            for n, _, v in proto_fields(value):
                if n == 2:
                    m.charsmap = bytes(v)
                elif n in (3, 4, 5):
                    setattr(m, ("add_dummy_prefix", "remove_extra_whitespaces", "escape_whitespaces")[n - 3], bool(v))
    if not m.pieces:
        raise ValueError(f"{path}: not a SentencePiece model (no pieces)")
    return m


def build_from_spm(m: SpmModel, extra_ids: int = 0, t5_post_processor: bool = True):
    """The ``tokenizers.Tokenizer`` that encodes like ``SentencePieceProcessor(m).encode``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if m.model_type != UNIGRAM:
        raise ValueError(f"SentencePiece model type {m.model_type} is not supported (unigram only, as mT5)")
    if m.treat_whitespace_as_suffix:
        raise ValueError("SentencePiece models with treat_whitespace_as_suffix are not supported")
    tok = Tokenizer(models.Unigram([(p, s) for p, s, _ in m.pieces], unk_id=m.unk_id, byte_fallback=m.byte_fallback))
    steps = [normalizers.Precompiled(m.charsmap)] if m.charsmap else []
    if m.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if m.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if m.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    tok.normalizer = normalizers.Sequence(steps)
    user = [p for p, _, kind in m.pieces if kind == USER_DEFINED]
    if user:
        tok.pre_tokenizer = pre_tokenizers.Split(
            Regex("|".join(re.escape(p) for p in sorted(user, key=len, reverse=True))), "isolated")
    steps = [decoders.Replace("▁", " ")]
    if m.byte_fallback:
        steps.append(decoders.ByteFallback())
    steps.append(decoders.Fuse())
    if m.add_dummy_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    specials = [p for p, _, kind in m.pieces if kind in (CONTROL, UNKNOWN)]
    specials += [f"<extra_id_{i}>" for i in reversed(range(extra_ids))]  # <extra_id_0> gets the last id
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    eos = m.special("eos")
    if t5_post_processor and eos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, m.eos_id)])
    return tok


def spiece_tokenizer(path: str | Path, tokenizer_config: dict | None = None, model_type: str = ""):
    """A PreTrainedTokenizerFast for a folder's SentencePiece model.

    ``extra_ids`` comes from tokenizer_config.json, else 100 for the T5 family (what
    T5Tokenizer adds), else 0.
    """
    from transformers import PreTrainedTokenizerFast

    config = tokenizer_config or {}
    t5 = model_type in T5_FAMILY or str(config.get("tokenizer_class") or "").lower().startswith(("t5", "mt5"))
    extra_ids = int(config.get("extra_ids", 100 if t5 else 0))
    m = read_spm(path)
    tok = build_from_spm(m, extra_ids)
    names = {f"{k}_token": m.special(k) for k in ("unk", "bos", "eos", "pad")}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **{k: v for k, v in names.items() if v is not None},
        extra_special_tokens=[f"<extra_id_{i}>" for i in range(extra_ids)],
        model_max_length=config.get("model_max_length", 512),
        model_input_names=["input_ids", "attention_mask"],
    )


def train_spiece(texts, model_file: str | Path, vocab_size: int = 8000, byte_fallback: bool = False,
                 user_defined_symbols: tuple[str, ...] = (), seed_chars: int = 1_000_000) -> Path:
    """Train a unigram SentencePiece model with mT5's settings (nmt_nfkc normalization,
    pad 0 / eos 1 / unk 2, no bos) on ``texts``: a stand-in for mT5's spiece.model, which
    cannot be downloaded here.  Lines longer than SentencePiece's limit are cut."""
    import io

    import sentencepiece as spm

    def lines():
        for text in texts:
            for line in text.split("\n"):
                line = line.strip()
                while line:
                    yield line[:1000]
                    line = line[1000:]

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines(), model_writer=model, model_type="unigram", vocab_size=vocab_size,
        character_coverage=0.9995, normalization_rule_name="nmt_nfkc", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        byte_fallback=byte_fallback, user_defined_symbols=list(user_defined_symbols), hard_vocab_limit=False,
        seed_sentencepiece_size=seed_chars, num_threads=1, minloglevel=2)
    Path(model_file).write_bytes(model.getvalue())
    return Path(model_file)


def write_mt5_standin(out_dir: str | Path, texts, vocab_size: int = 8000, byte_fallback: bool = False) -> Path:
    """A tokenizer folder shaped like Google's mT5 ones: spiece.model (trained on ``texts``),
    special_tokens_map.json and tokenizer_config.json naming T5Tokenizer, no tokenizer.json."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_spiece(texts, out / "spiece.model", vocab_size, byte_fallback)
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    config = {**special, "extra_ids": 100, "model_max_length": 1024, "tokenizer_class": "T5Tokenizer"}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out
