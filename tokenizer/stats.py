"""stats.json: what the vocabulary is made of and how it does on held-out text.

Measured on the valid split (capped, so the build stays fast): [UNK] rate,
characters per token, and the same numbers for the BERT-Chinese character
vocabulary and the T5 PEGASUS word vocabulary (each with its own recipe,
tokenizer.released) when the shared data has them.
``shared_data``: the share of characters lost to [UNK] (and carried by byte
pieces) on every file of ZH_SHARED_DATA, its first SHARED_REPORT_CHARS characters
each; ``shared_data_report(folder, max_chars=None)`` measures the whole files.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from .normalize import SPACE_MARK, is_alnum_run, is_cjk_run, normalize
from .vocab import BYTE_PIECES, SPECIALS, UNK

SHARED_DATA = os.environ.get("ZH_SHARED_DATA", "/work/shared/data")
MAX_EVAL_CHARS = 2_000_000
SHARED_REPORT_CHARS = 20_000  # per shared-data file in stats.json: 0.8M characters, resolution 0.005%


def composition(tokens: list[str]) -> dict:
    kinds = Counter()
    specials, byte_pieces = set(SPECIALS), set(BYTE_PIECES)
    for t in tokens:
        if t in specials:
            kinds["special"] += 1
        elif t in byte_pieces:
            kinds["byte"] += 1
        elif is_cjk_run(t):
            kinds["cjk_char" if len(t) == 1 else "cjk_word"] += 1
        elif t == SPACE_MARK or is_alnum_run(t):
            kinds["ascii_piece"] += 1
        elif len(t) == 1:
            kinds["other_char"] += 1
        else:
            kinds["other"] += 1
    return dict(sorted(kinds.items()))


def eval_texts(data_dir: str | Path, max_chars: int = MAX_EVAL_CHARS) -> list[str]:
    """Held-out documents (valid split), capped at ``max_chars`` characters."""
    from .counting import iter_texts, shard_paths

    texts, n = [], 0
    for text in iter_texts(shard_paths(data_dir, "valid")):
        texts.append(text)
        n += len(text)
        if n >= max_chars:
            break
    return texts


def _rates(token_lists: list[list[str]], texts: list[str], unk: str = UNK) -> dict:
    n_tok = sum(len(t) for t in token_lists)
    n_unk = sum(t.count(unk) for t in token_lists)
    n_chars = sum(sum(1 for ch in normalize(x) if not ch.isspace()) for x in texts)
    return {
        "tokens": n_tok,
        "unk_rate": round(n_unk / max(n_tok, 1), 6),
        "chars_per_token": round(n_chars / max(n_tok, 1), 4),
    }


def char_loss(tok, texts: list[str]) -> dict:
    """Characters (whitespace aside) that come out as [UNK], and those carried by byte pieces."""
    unk_id = tok.token_to_id(UNK)
    byte_ids = {tok.token_to_id(b) for b in BYTE_PIECES} - {None}
    chars = unk = byte = 0
    for text, enc in zip(texts, tok.encode_batch(texts, add_special_tokens=False)):
        chars += sum(1 for ch in text if not ch.isspace())
        byte_spans = set()
        for tid, (start, end) in zip(enc.ids, enc.offsets):
            if tid == unk_id:
                unk += sum(1 for ch in text[start:end] if not ch.isspace())
            elif tid in byte_ids:
                byte_spans.add((start, end))  # every byte of a character has the character's span
        byte += sum(end - start for start, end in byte_spans)
    return {"characters": chars, "unk_characters": unk, "unk_char_rate": round(unk / max(chars, 1), 8),
            "byte_fallback_characters": byte, "byte_fallback_char_rate": round(byte / max(chars, 1), 8)}


def shared_data_report(folder: str | Path, root: str | Path = SHARED_DATA, max_chars: int | None = SHARED_REPORT_CHARS) -> dict | None:
    """char_loss on every text file of the shared data (None when it is absent)."""
    from tokenizers import Tokenizer

    from .shared_corpora import documents

    if not (Path(root) / "corpus").is_dir():
        return None
    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    files = {name: char_loss(tok, texts) for name, texts in documents(str(root), max_chars).items()}
    total = {k: sum(f[k] for f in files.values()) for k in ("characters", "unk_characters", "byte_fallback_characters")}
    total["unk_char_rate"] = round(total["unk_characters"] / max(total["characters"], 1), 8)
    total["byte_fallback_char_rate"] = round(total["byte_fallback_characters"] / max(total["characters"], 1), 8)
    return {"max_chars_per_file": max_chars, "total": total, "files": files}


def released_tokens(texts: list[str], vocab_file: str, recipe: str) -> list[list[str]]:
    """Tokens of a released vocabulary's own recipe (tokenizer.released: BERT-Chinese's
    BasicTokenizer + WordPiece, T5 PEGASUS' jieba + WordPiece)."""
    from .released import released_tokenizer

    tok = released_tokenizer(vocab_file, recipe)
    return [tok.convert_ids_to_tokens(ids) for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def tokenizer_stats(out_dir: str | Path, data_dir: str | Path, max_chars: int = MAX_EVAL_CHARS) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(out_dir) / "tokenizer.json"))
    tokens = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    stats: dict = {"composition": composition(tokens), "shared_data": shared_data_report(out_dir)}
    texts = eval_texts(data_dir, max_chars)
    if not texts:
        stats["valid"] = None
        return stats
    enc = tok.encode_batch(texts, add_special_tokens=False)
    ours = [[tokens[i] for i in e.ids] for e in enc]  # e.tokens shows the text under [UNK]
    valid = {"documents": len(texts), "characters": sum(len(x) for x in texts), "ours": _rates(ours, texts)}
    valid["ours"].update(char_loss(tok, texts))
    vocab_dir = Path(SHARED_DATA) / "vocab"
    if (vocab_dir / "bert_chinese_vocab.txt").exists():
        valid["bert_chinese_chars"] = _rates(released_tokens(texts, str(vocab_dir / "bert_chinese_vocab.txt"), "bert-chinese"), texts)
    if (vocab_dir / "t5_pegasus_vocab.txt").exists():
        valid["t5_pegasus"] = _rates(released_tokens(texts, str(vocab_dir / "t5_pegasus_vocab.txt"), "t5-pegasus"), texts)
    stats["valid"] = valid
    return stats
