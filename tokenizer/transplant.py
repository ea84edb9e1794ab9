"""Move a trained model onto another vocabulary (T5 PEGASUS's ``keep_tokens`` + ``compound_tokens``).

For every token of the new vocabulary, the rows of an embedding or output head start as:

* ``kept``: the old row of the same token (same string, or the same special role);
* ``composed``: the mean of the old rows of the pieces the **old** tokenizer splits the
  token's text into (WoBERT: a new word starts as the mean of its characters), so the
  model sees roughly what it saw before. This works for any old tokenizer: SentencePiece
  (mT5), WordPiece (BERT-Chinese) or this project's own;
* ``fresh``: no usable piece: the mean of all old rows (or random rows, see ``new_rows``).

Specials are mapped by role (``[PAD]``→pad, ``[UNK]``→unk, ``[CLS]``→cls / bos / the
decoder-start pad, ``[SEP]``→sep / eos, ``[MASK]``→mask / the first sentinel) and T5
sentinels ``<extra_id_N>`` by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .normalize import SPACE_MARK
from .vocab import BYTE_PIECE

WORD_MARKS = ("▁", "##", "Ġ")


@dataclass
class TransplantPlan:
    sources: list[list[int]]            # old ids whose rows are averaged, per new id ([] = fresh)
    kinds: list[str]                    # kept | special | composed | fresh, per new id
    examples: dict = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.kinds:
            out[k] = out.get(k, 0) + 1
        return out


def _role_token(tok, *roles: str):
    for role in roles:
        value = getattr(tok, f"{role}_token", None)
        if value:
            return value
    return None


def special_map(old_tok, new_tok) -> dict[str, str]:
    """New special token -> old token with the same role."""
    roles = {"pad": ("pad",), "unk": ("unk",), "cls": ("cls", "bos", "pad"), "sep": ("sep", "eos"),
             "mask": ("mask",), "bos": ("bos", "cls"), "eos": ("eos", "sep")}
    old_vocab = old_tok.get_vocab()
    out = {}
    for role, candidates in roles.items():
        new = getattr(new_tok, f"{role}_token", None)
        old = _role_token(old_tok, *candidates)
        if new and old and new not in out:
            out[new] = old
    for name in new_tok.get_vocab():
        if name.startswith("<extra_id_") and name in old_vocab:
            out[name] = name
    mask = getattr(new_tok, "mask_token", None)
    if mask and mask not in out and "<extra_id_0>" in old_vocab:
        out[mask] = "<extra_id_0>"      # mT5 has no [MASK]; its first sentinel plays that role
    return out


def _text_of(token: str) -> str:
    return token.replace(SPACE_MARK, " ")


def _useful(old_tok, ids: list[int]) -> list[int]:
    """Drop pieces that are only a word-boundary mark (SentencePiece's lone "▁")."""
    pieces = old_tok.convert_ids_to_tokens(ids)
    keep = [i for i, p in zip(ids, pieces) if p.strip("".join(WORD_MARKS)).strip()]
    return keep or ids


def plan_transplant(old_tok, new_tok) -> TransplantPlan:
    """Which old rows each new token starts from."""
    old_vocab = old_tok.get_vocab()
    specials = special_map(old_tok, new_tok)
    unk = getattr(old_tok, "unk_token_id", None)
    new_items = sorted(new_tok.get_vocab().items(), key=lambda kv: kv[1])
    sources, kinds, examples = [], [], {}
    for token, _ in new_items:
        if token in specials and specials[token] in old_vocab:
            sources.append([old_vocab[specials[token]]])
            kinds.append("special")
            continue
        if token in new_tok.all_special_tokens:
            sources.append([])
            kinds.append("fresh")
            continue
        if token in old_vocab:
            sources.append([old_vocab[token]])
            kinds.append("kept")
            continue
        if BYTE_PIECE.fullmatch(token):      # a byte-fallback piece the old model lacks: no text to compose
            sources.append([])
            kinds.append("fresh")
            continue
        ids = [i for i in _useful(old_tok, old_tok(_text_of(token), add_special_tokens=False)["input_ids"])
               if i != unk]
        sources.append(ids)
        kinds.append("composed" if ids else "fresh")
        if ids and len(examples) < 5 and len(token) > 1:
            examples[token] = old_tok.convert_ids_to_tokens(ids)
    return TransplantPlan(sources, kinds, examples)


def apply_plan(old_rows: torch.Tensor, plan: TransplantPlan, new_rows: str = "pieces",
               generator: torch.Generator | None = None, init_std: float = 0.02) -> torch.Tensor:
    """Rows (or a bias vector) for the new vocabulary.

    ``new_rows="pieces"``: composed tokens take the mean of their pieces' rows, fresh ones the
    mean row. ``"random"``: every token that is not kept (or a special) starts as a fresh model
    would, N(0, init_std) rows and zero biases (TencentPretrain's adapter; a baseline).
    """
    old = old_rows.detach().float()
    mean = old.mean(0)
    out = []
    for ids, kind in zip(plan.sources, plan.kinds):
        if kind in ("kept", "special"):
            out.append(old[ids[0]])
        elif new_rows == "random":
            out.append(init_std * torch.randn(mean.shape, generator=generator) if old.dim() > 1
                       else torch.zeros_like(mean))
        elif ids:
            out.append(old[ids].mean(0))
        else:
            out.append(mean)
    return torch.stack(out).to(old_rows.dtype)


def tokens_per_char(tok, texts: list[str]) -> float:
    n_tokens = sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
    return n_tokens / max(1, sum(len(t) for t in texts))


def transplant_embeddings(old_embedding: torch.Tensor, old_vocab: list[str], new_vocab: list[str]) -> torch.Tensor:
    """Rows for ``new_vocab`` from a character-vocabulary table (rows in ``old_vocab`` order), without
    tokenizers: a shared token keeps its row, another the mean of its characters' rows (a character
    may also be found as a ``##`` continuation), a sentinel starts from [MASK], the rest the mean row."""
    if old_embedding.shape[0] != len(old_vocab):
        raise ValueError(f"{old_embedding.shape[0]} rows for {len(old_vocab)} tokens")
    index = {t: i for i, t in enumerate(old_vocab)}
    sources, kinds = [], []
    for tok in new_vocab:
        if tok in index:
            ids = [index[tok]]
        elif tok.startswith("<extra_id_") and "[MASK]" in index:
            ids = [index["[MASK]"]]
        elif BYTE_PIECE.fullmatch(tok):       # a byte-fallback piece: no characters to average
            ids = []
        else:
            ids = [i for ch in tok.replace(SPACE_MARK, "") if (i := index.get(ch, index.get("##" + ch))) is not None]
        sources.append(ids)
        kinds.append("kept" if len(ids) == 1 and (tok in index or tok.startswith("<extra_id_")) else
                     "composed" if ids else "fresh")
    return apply_plan(old_embedding, TransplantPlan(sources, kinds)) if new_vocab else \
        old_embedding.new_zeros((0, old_embedding.shape[1]))
