"""The fast path: a ``tokenizers`` Unigram pipeline that transformers loads with no custom code.

jieba's HMM-off segmentation is the maximum-probability path over a word DAG
scored by ``log(freq / total)``; a Unigram model with those scores runs the
same Viterbi in Rust.  Normalizer and pre-tokenizer mirror tokenizer.normalize;
the decoder turns byte pieces back into characters and the space marker into a space.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from .charsmap import precompiled_charsmap
from .normalize import SPACE_BEFORE_ALNUM, SPACE_MARK, WS_RUN
from .vocab import BERT_SPECIALS, BYTE_PIECES, CLS, MASK, PAD, SENTINELS, SEP, SPECIALS, UNK

MODEL_MAX_LENGTH = 512


def unicode_normalizers() -> list:
    """U+2581 to space, then pipeline.clean.normalize_unicode (NFKC keeping ，！？；：（）…～),
    as two ``tokenizers`` steps: one charsmap pass and NFC (see tokenizer.charsmap)."""
    return [normalizers.Precompiled(precompiled_charsmap()), normalizers.NFC()]


def pipeline_parts(tok: Tokenizer, lowercase: bool = True) -> Tokenizer:
    """Attach normalizer, pre-tokenizer, post-processor and decoder (shared by all algos)."""
    norm = unicode_normalizers()
    if lowercase:
        norm.append(normalizers.Lowercase())
    norm.append(normalizers.Replace(Regex(SPACE_BEFORE_ALNUM), SPACE_MARK))
    tok.normalizer = normalizers.Sequence(norm)
    # Whitespace only: no vocabulary entry crosses a tokenizer.normalize piece
    # boundary (CJK run / ASCII run / other character), so the Viterbi over a
    # whole chunk equals the Viterbi per piece, and skipping a second regex
    # split is the biggest speed win of the pipeline.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(WS_RUN), "removed")
    cls_id, sep_id = tok.token_to_id(CLS), tok.token_to_id(SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)],
    )
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Replace(SPACE_MARK, " ")])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return tok


def build_unigram(tokens: list[str], scores: list[float], lowercase: bool = True, byte_fallback: bool = False) -> Tokenizer:
    """Unigram tokenizer with ids in the given order (specials first; with ``byte_fallback``
    a character outside the vocabulary becomes its <0xNN> byte pieces, not [UNK])."""
    assert tokens[: len(SPECIALS)] == SPECIALS, "specials must keep ids 0..104"
    assert not byte_fallback or set(BYTE_PIECES) <= set(tokens), "byte fallback needs all 256 byte pieces"
    model = models.Unigram(list(zip(tokens, scores)), unk_id=tokens.index(UNK), byte_fallback=byte_fallback)
    return pipeline_parts(Tokenizer(model), lowercase)


# token_type_ids are not returned by default: T5's generate() rejects them.  BERT-style
# pair inputs ask for them with ``tok(a, b, return_token_type_ids=True)``.
MODEL_INPUT_NAMES = ("input_ids", "attention_mask")


PROJECT_SPECIALS = {
    "pad_token": PAD,
    "unk_token": UNK,
    "cls_token": CLS,
    "sep_token": SEP,
    "mask_token": MASK,
    "bos_token": CLS,  # T5: decoder start
    "eos_token": SEP,
    "additional_special_tokens": SENTINELS,
}


def write_configs(
    out: Path,
    special_map: dict,
    model_max_length: int = MODEL_MAX_LENGTH,
    model_input_names: tuple[str, ...] = MODEL_INPUT_NAMES,
    tokenizer_class: str = "PreTrainedTokenizerFast",
    **extra,
) -> None:
    """special_tokens_map.json and tokenizer_config.json (``extra``: more tokenizer_config keys)."""
    config = {
        "tokenizer_class": tokenizer_class,
        "model_max_length": model_max_length,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": list(model_input_names),
        **special_map,
        **extra,
    }
    if "additional_special_tokens" in config:
        config["extra_special_tokens"] = config.pop("additional_special_tokens")
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_vocab_txt(tok: Tokenizer, out: Path) -> None:
    vocab = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab))), "ids must be dense"
    (out / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")


def save_folder(
    tok: Tokenizer,
    out_dir: str | Path,
    model_max_length: int = MODEL_MAX_LENGTH,
    model_input_names: tuple[str, ...] = MODEL_INPUT_NAMES,
    special_map: dict | None = None,
    **extra,
) -> None:
    """Write tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=False)
    write_vocab_txt(tok, out)
    write_configs(out, special_map or PROJECT_SPECIALS, model_max_length, model_input_names, **extra)


def load(out_dir: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(Path(out_dir) / "tokenizer.json"))


__all__ = ["build_unigram", "pipeline_parts", "save_folder", "load", "BERT_SPECIALS"]
