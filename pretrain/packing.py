"""Packing several sequences into one row without letting them see each other.

Padding every sequence of a batch to the longest one wastes the compute of the pad
positions (on real data 30-70 %, BENCHMARKS.md). Packing puts several sequences
(segments) into one row; three things keep it exact:

* attention: a query attends only keys of its own segment (block-diagonal, and causal or
  UniLM-shaped inside a segment where the model says so), given to the Hugging Face
  model as a 4D mask: boolean for SDPA / FlashAttention-style kernels, additive for the
  eager path (``attention_mask_4d``);
* positions: absolute position ids restart at 0 in every segment (``position_ids`` of
  ``pack``); T5's relative buckets and RoFormer's rotary embeddings depend only on the
  distance between two tokens of one segment, which packing does not change;
* losses and pooling: computed per token or per segment id, never per row.

A row's segment ids are the indices of the original sequences (pads: -1), so pooled
vectors come back in the original order. Pad queries attend every key (their output is
never used), so no softmax row is empty.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch


def first_fit(lengths: list[tuple[int, ...]], caps: tuple[int, ...], max_rows: int = 0,
              decreasing: bool = False) -> list[list[int]]:
    """Rows of item indices whose lengths sum to at most ``caps`` in every dimension.

    First fit: each item goes to the first row it fits in, else a new row; ``decreasing`` takes
    the longest items first (first-fit decreasing: fuller rows). Deterministic, so a resumed run
    packs exactly as before. With ``max_rows``, items that fit in no allowed row are left out.
    An item longer than ``caps`` must be truncated by the caller.

    The row search is one numpy comparison over the open rows' free room per item (a Python scan
    of every row per item was most of a collation's time at batch 128).
    """
    n = len(lengths)
    if not n:
        return []
    need = np.asarray(lengths, dtype=np.int64).reshape(n, len(caps))
    cap = np.asarray(caps, dtype=np.int64)
    too_long = np.flatnonzero((need > cap).any(axis=1))
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(f"item {i} has lengths {tuple(lengths[i])} > row capacity {tuple(caps)}")
    order = np.argsort(-need.sum(axis=1), kind="stable") if decreasing else np.arange(n)
    free = np.empty((n, len(caps)), dtype=np.int64)   # room left in each row (the first len(rows) entries)
    rows: list[list[int]] = []
    dims = range(1, len(caps))
    for i in order.tolist():
        r = -1
        if rows:
            room, want = free[:len(rows)], lengths[i]
            fits = room[:, 0] >= want[0]
            for d in dims:
                fits &= room[:, d] >= want[d]
            r = int(fits.argmax())
            r = r if fits[r] else -1
        if r < 0:
            if max_rows and len(rows) >= max_rows:
                continue
            r = len(rows)
            rows.append([])
            free[r] = cap
        rows[r].append(i)
        free[r] -= need[i]
    return rows


def pack(rows: list[list[list[int]]], pad_id: int, segment_index: list[list[int]] | None = None,
         extra: dict[str, list[list[list[int]]]] | None = None) -> dict[str, torch.Tensor]:
    """Right-padded packed rows: ``input_ids``, ``attention_mask`` (1 on tokens), ``segment_ids``
    (the segment's index, -1 on pads) and ``position_ids`` (0, 1, ... within each segment).

    ``rows[r]`` lists row r's segments (token lists or arrays); ``segment_index[r][k]`` names
    segment k of row r (default: numbered in order over the batch). ``extra`` packs per-token
    companions the same way (e.g. token types), padded with 0. Filled by flat numpy scatters.
    """
    n = len(rows)
    seg_len = np.array([len(t) for segs in rows for t in segs], dtype=np.int64)
    seg_row = np.repeat(np.arange(n), [len(segs) for segs in rows])
    row_len = np.bincount(seg_row, weights=seg_len, minlength=n).astype(np.int64)
    width = int(row_len.max(initial=0))
    total = int(seg_len.sum())
    seg_flat_start = np.cumsum(seg_len) - seg_len                    # each segment's offset in the flat token list
    row_flat_start = np.cumsum(row_len) - row_len
    tok_row = np.repeat(seg_row, seg_len)
    tok_pos = np.arange(total) - np.repeat(seg_flat_start, seg_len)
    tok_col = np.arange(total) - np.repeat(row_flat_start, row_len)
    names = (np.array([k for r in segment_index for k in r], dtype=np.int64) if segment_index is not None
             else np.arange(len(seg_len)))

    def flat(parts):
        pieces = [t for segs in parts for t in segs]
        if all(isinstance(t, list) for t in pieces):     # one C-level pass over Python lists
            return np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int64, count=total)
        pieces = [np.asarray(t, dtype=np.int64).reshape(-1) for t in pieces]
        return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)

    def grid(fill, values):
        out = np.full((n, width), fill, dtype=np.int64)
        out[tok_row, tok_col] = values
        return torch.from_numpy(out)

    seg = grid(-1, np.repeat(names, seg_len))
    out = {"input_ids": grid(pad_id, flat(rows)), "attention_mask": (seg >= 0).long(), "segment_ids": seg,
           "position_ids": grid(0, tok_pos)}
    for key, values in (extra or {}).items():
        out[key] = grid(0, flat(values))
    return out


def pack_sequences(seqs: list[list[int]], width: int, pad_id: int, max_rows: int = 0,
                   extra: dict[str, list[list[int]]] | None = None, packing: bool = True) -> dict[str, torch.Tensor]:
    """``first_fit`` + ``pack`` for one-part sequences (each at most ``width`` tokens); segment ids
    are the sequences' indices. ``packing=False``: one sequence per padded row (same keys)."""
    if packing:
        rows = first_fit([(len(s),) for s in seqs], (width,), max_rows, decreasing=True)
    else:
        rows = [[i] for i in range(len(seqs))][:max_rows or None]
    grouped = {k: [[v[i] for i in row] for row in rows] for k, v in (extra or {}).items()}
    return pack([[seqs[i] for i in row] for row in rows], pad_id, rows, grouped)


def window_segments(input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_id: int) -> dict[str, torch.Tensor]:
    """``segment_ids`` / ``position_ids`` for token-shard windows (``[CLS]`` + documents joined by
    ``[SEP]``): a new segment starts after each [SEP], so with ``train.packing`` no document
    attends another there either. Segments are numbered over the batch; pads get -1."""
    ends = (input_ids == sep_id) & attention_mask.bool()
    starts = torch.zeros_like(ends)
    starts[:, 1:] = ends[:, :-1]
    starts[:, 0] = True
    seg = starts.long().flatten().cumsum(0).view_as(input_ids) - 1
    seg = seg.masked_fill(~attention_mask.bool(), -1)
    col = torch.arange(input_ids.shape[1]).expand_as(input_ids)
    first = torch.where(starts, col, torch.zeros_like(col)).cummax(dim=1).values
    return {"segment_ids": seg, "position_ids": (col - first).masked_fill(~attention_mask.bool(), 0)}


def attention_mask_4d(q_segments: torch.Tensor, k_segments: torch.Tensor | None = None, causal: bool = False,
                      allowed: torch.Tensor | None = None, implementation: str = "sdpa",
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 1, Lq, Lk) mask: query i may attend key j iff both are in the same segment (and j <= i
    when ``causal``, and ``allowed[b, i, j]`` when given). Pad queries attend everything.

    Boolean (True = attend) for SDPA / flex / flash; additive (0 or the dtype's minimum) for
    ``eager`` implementations, which add the mask to the scores.
    """
    k_segments = q_segments if k_segments is None else k_segments
    ok = (q_segments[:, :, None] == k_segments[:, None, :]) & (k_segments[:, None, :] >= 0)
    if causal:
        lq, lk = q_segments.shape[1], k_segments.shape[1]
        ok &= torch.ones(lq, lk, dtype=torch.bool, device=ok.device).tril()
    if allowed is not None:
        ok &= allowed
    ok |= (q_segments < 0)[:, :, None]
    ok = ok[:, None]
    if implementation == "eager":
        return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill(~ok, torch.finfo(dtype).min)
    return ok


def model_mask(model, q_segments: torch.Tensor, k_segments: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """``attention_mask_4d`` in the form ``model``'s attention implementation wants."""
    impl = getattr(model.config, "_attn_implementation", "eager") or "eager"
    dtype = next(model.parameters()).dtype
    return attention_mask_4d(q_segments, k_segments, implementation=impl, dtype=dtype, **kw)


ROTARY = ("roformer",)      # rotary positions: relative by construction, the model takes no position ids


def encoder_kwargs(model, attention_mask: torch.Tensor, segment_ids: torch.Tensor | None = None,
                   position_ids: torch.Tensor | None = None) -> dict:
    """Keyword arguments for a Hugging Face encoder call: the plain 2D mask, or for packed rows the
    segment mask and the restarting position ids (where the model has absolute positions)."""
    if segment_ids is None:
        return {"attention_mask": attention_mask}
    kw = {"attention_mask": model_mask(model, segment_ids)}
    if position_ids is not None and model.config.model_type not in ROTARY:
        kw["position_ids"] = position_ids
    return kw


LAYOUT = "_flat_layout"     # attribute of a packed rows' 4D mask given with flattened inputs: ``with_rows``


def flat_length(n: int) -> int:
    """``n`` tokens rounded up to a grid of about 16 lengths per doubling (multiples of 16 below
    512, of 32 up to 1,023, of 64 up to 2,047, ...; at most ~6 % padding). A CPU matmul of a shape
    it has not seen pays ~1 ms to build its kernel (oneDNN): one new length per step for every
    linear layer cost more than the padding saved."""
    step = max(16, 1 << max(n.bit_length() - 5, 0))
    return -(-n // step) * step


def flatten_rows(batch: dict, groups: dict[str, tuple[str, ...]], fill: dict[str, int] | None = None) -> dict:
    """A packed batch as one row: for each ``segment key: (keys ...)`` of ``groups``, the segment
    key's and the keys' tokens where that segment id is >= 0, laid end to end in row order, then
    padded to ``flat_length`` (``fill[key]``, default 0; the segment key -1).

    Linear layers then see tokens, not rows: first-fit leaves rows part empty when a batch's
    sequences do not fill them (20-36 % of a T5 batch's cells, BENCHMARKS.md). Attention needs
    the rows back (``with_rows``)."""
    fill = fill or {}
    out = dict(batch)
    for seg_key, keys in groups.items():
        keep = batch[seg_key] >= 0
        n = int(keep.sum())
        pad = flat_length(n) - n
        for key in (seg_key, *keys):
            values = batch[key][keep]
            tail = values.new_full((pad,), -1 if key == seg_key else fill.get(key, 0))
            out[key] = torch.cat([values, tail]).unsqueeze(0)
    return out


def with_rows(mask: torch.Tensor, q_keep: torch.Tensor, k_keep: torch.Tensor | None = None) -> torch.Tensor:
    """``mask``, the packed rows' 4D mask (``model_mask``), made to serve the same batch flattened
    (``flatten_rows``): it carries, for the queries (``q_keep``: the rows' token cells) and keys,
    where each row cell's token sits in the flat sequence, so that an attention that reads it
    (``pretrain.dropout``'s CPU attention, ``train.flatten_packed``) gathers the rows, computes
    them under this mask (the attention shapes of the rows: few, and kernels already built) and
    scatters the outputs back. Returns ``mask``."""
    def cells(keep):
        flat = keep.reshape(-1)
        index = (flat.long().cumsum(0) - 1).clamp_(min=0)     # a pad cell reads the token before it (masked)
        return index, flat.nonzero().squeeze(1)
    k_keep = q_keep if k_keep is None else k_keep
    (q_index, q_tokens), (k_index, _) = cells(q_keep), cells(k_keep)
    setattr(mask, LAYOUT, (q_index, q_tokens, k_index, q_keep.shape, k_keep.shape))
    return mask


def padding_waste(token_counts: list[int], row_width: int, rows: int) -> float:
    """Share of a padded batch's cells that are padding."""
    cells = row_width * rows
    return 1.0 - sum(token_counts) / cells if cells else 0.0


def segment_pool(states: torch.Tensor, segment_ids: torch.Tensor, n: int, keep: torch.Tensor | None = None,
                 first: bool = False) -> torch.Tensor:
    """(n, H) per-segment vectors: the mean of ``states`` over each segment's positions where
    ``keep`` (default all), or its first position with ``first``. Segments are rows 0..n-1.

    Index arithmetic only (no boolean indexing): nothing waits for the device. Positions that
    count for no segment are summed into a spare row n, which is dropped.
    """
    flat_seg = segment_ids.reshape(-1)
    flat = states.reshape(-1, states.shape[-1])
    sel = flat_seg >= 0
    if keep is not None:
        sel = sel & keep.reshape(-1).bool()
    if first:
        sel = sel & torch.cat([torch.ones(1, dtype=torch.bool, device=sel.device), flat_seg[1:] != flat_seg[:-1]])
    index = torch.where(sel, flat_seg, torch.full_like(flat_seg, n))
    weight = sel.to(flat.dtype)
    total = flat.new_zeros(n + 1, flat.shape[-1]).index_add(0, index, flat * weight[:, None])[:n]
    if first:
        return total
    count = flat.new_zeros(n + 1).index_add(0, index, weight)[:n]
    return total / count.clamp(min=1)[:, None]
