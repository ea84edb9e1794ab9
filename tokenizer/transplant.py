"""Start a word+character vocabulary from a character-vocabulary checkpoint (e.g. BERT-Chinese).

WoBERT's trick: tokens both vocabularies share keep their trained rows; a new
word starts as the mean of its characters' rows, so the model sees roughly
what it saw before the vocabulary changed.
"""

from __future__ import annotations

import torch

from .normalize import SPACE_MARK
from .vocab import BYTE_PIECE


def transplant_embeddings(old_embedding: torch.Tensor, old_vocab: list[str], new_vocab: list[str]) -> torch.Tensor:
    """Rows for ``new_vocab`` built from ``old_embedding`` (rows in ``old_vocab`` order).

    Shared token: its old row.  Otherwise the mean of its characters' rows (a
    character may also be found as a ``##`` continuation).  T5 sentinels
    start from [MASK]; byte pieces (<0xNN>) and anything with no known character
    get the mean row.
    """
    if old_embedding.shape[0] != len(old_vocab):
        raise ValueError(f"{old_embedding.shape[0]} rows for {len(old_vocab)} tokens")
    index = {t: i for i, t in enumerate(old_vocab)}
    mean = old_embedding.float().mean(0)
    rows = []
    for tok in new_vocab:
        if tok in index:
            rows.append(old_embedding[index[tok]].float())
            continue
        if tok.startswith("<extra_id_") and "[MASK]" in index:
            rows.append(old_embedding[index["[MASK]"]].float())
            continue
        if BYTE_PIECE.fullmatch(tok):  # a byte fallback piece: no characters to average
            rows.append(mean)
            continue
        ids = [i for ch in tok.replace(SPACE_MARK, "") if (i := index.get(ch, index.get("##" + ch))) is not None]
        rows.append(old_embedding[ids].float().mean(0) if ids else mean)
    return torch.stack(rows).to(old_embedding.dtype) if rows else old_embedding.new_zeros((0, old_embedding.shape[1]))
