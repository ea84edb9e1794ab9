"""RoFormer-Sim (SimBERTv2): one RoFormer that both retrieves and generates similar sentences.

Recipe (seed 000, "SimBERTv2来了"): RoFormer-Sim = RoFormer + UniLM + contrastive
learning + BART + distillation. For a pair of similar sentences (a, b) the model
reads ``[CLS] a [SEP] b [SEP]`` (and ``[CLS] b [SEP] a [SEP]``) under the UniLM
mask: the source segment (``[CLS] a [SEP]``, token type 0) attends
bidirectionally within itself, the target segment (token type 1) causally.
Two losses share that one forward pass:

* seq2seq: cross-entropy of the target tokens (generate the similar sentence);
* contrastive: the sentence vectors of the 2B sequences (``objective.pooling``:
  the ``[CLS]`` state or the mean over the source tokens), scaled cosine
  similarity (scale 30, as SimBERT), each row's positive being its partner and
  every other sentence of the batch a negative. Under the UniLM mask the source
  sees only itself, so its vector is exactly what ``RoFormerModel`` gives for
  ``[CLS] a [SEP]`` alone: the exported encoder reproduces it.

BART noise: with probability ``noise_prob`` a source is corrupted by token
deletion and ``[MASK]`` replacement; the target stays clean, so the model learns
to paraphrase/restore. Distillation (stage 2 of the recipe): an optional teacher
(an exported RoFormer-Sim with the same vocabulary) encodes the same sources and
the student's in-batch cosine matrix is pulled to the teacher's (MSE).

Training pairs, built on the fly from cleaned documents (so every epoch draws
new ones, and the trainer's checkpointed RNG makes them resumable):
* with probability ``neighbor_prob`` a sentence and its neighbour in the same
  document (seq2seq: write the next/previous sentence; contrastive: topical
  neighbours are positives);
* otherwise the sentence with itself: a SimCSE dropout positive (two dropout /
  noise draws) whose seq2seq side is BART denoising;
* plus labeled rows from ``objective.pair_file`` (TSV ``s1\\ts2[\\tlabel]``, one or
  more files or globs, comma-separated), mixed in at ``pair_file_ratio``. A label is
  read relative to its file's largest label, so 0/1 files and 0-5 STS-B scores mean
  the same: rows at or above ``pair_positive_score`` are similar pairs; rows at or
  below ``pair_negative_score`` (drawn at ``pair_negative_ratio``) become a
  supervised-SimCSE hard negative: ``s1`` is paired with itself (dropout positive,
  BART denoising) and ``s2``, which looks alike but means something else, joins the
  batch as one more contrastive candidate (a source-only row with no target).
* ``swap_negative_prob``: an anchor's jieba words with two of them swapped join the batch
  as a hard negative (how PAWS builds its adversarial pairs), so word order matters.
* ``cosent_weight``: CoSENT (Su 2022) on ``cosent_rows`` labeled rows per batch, encoded
  alone: each file's pair cosines are ranked by their labels, the quantity Spearman scores.

Pooling has no weights (no extra pooler), so the exported ``RoFormerModel`` is the
retrieval model with no custom code; the choice travels in its config as
``sentence_pooling`` (``first-last-avg`` pools the average of the embedding output and
the last layer). Why ``mean`` is the default: a freshly initialized encoder's
``[CLS]`` states are nearly parallel (in-batch cosine about 0.9997 at tiny size,
the constant [CLS]/type embeddings dominate), so the scaled-cosine loss starts
flat and its first updates erase the little lexical signal there is; the mean
over source tokens starts at cosine about 0.9 and the loss shapes it from step
one (measured on STS valid pairs: bench/sts_bench.py).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import RoFormerConfig, RoFormerForCausalLM
from pretrain.objectives import load_tokenizer
from transformers.utils import logging as hf_logging

from pretrain.config import parse_section


@dataclass
class RoFormerSimConfig:
    """The ``objective:`` section of configs/roformer-sim.yaml."""
    scale: float = 30.0                 # cosine similarity scale of the contrastive softmax (SimBERT: 30)
    seq2seq_weight: float = 1.0
    contrastive_weight: float = 1.0
    noise_prob: float = 0.5             # share of sources that get BART noise
    mask_ratio: float = 0.15            # BART token masking, per source token
    delete_ratio: float = 0.10          # BART token deletion, per source token
    neighbor_prob: float = 0.5          # unlabeled pair = neighbouring sentences (else the sentence itself)
    min_sentence_chars: int = 5
    max_sentence_chars: int = 64
    pair_file: str = ""                 # optional TSV file(s)/glob(s), comma-separated (s1 \t s2 [\t label])
    pair_file_ratio: float = 0.5        # share of each batch drawn from pair_file when set
    pair_positive_score: float = 0.8    # label / file's max label at or above this: a similar pair
    pair_negative_score: float = 0.2    # ... at or below this: a hard negative row
    pair_negative_ratio: float = 0.3    # share of pair_file draws that are hard-negative rows
    pair_file_balanced: bool = False    # draw each file equally often (else each row equally often)
    pooling: str = "mean"               # sentence vector: "mean" of the source tokens, "cls", or "first-last-avg"
    swap_negative_prob: float = 0.0     # per anchor: its jieba words with two swapped joins as a hard negative
    cosent_weight: float = 0.0          # CoSENT ranking loss on labeled pair_file rows (0 = off)
    cosent_rows: int = 16               # labeled rows per batch for it (both sentences encoded alone)
    cosent_scale: float = 20.0          # CoSENT's cosine scale (lambda)
    cosent_one_file: bool = False       # all of a batch's CoSENT rows from one file (more comparable pairs)
    teacher: str = ""                   # exported RoFormer-Sim folder for distillation ("" = none)
    distill_weight: float = 1.0
    max_position_embeddings: int = 512


def unilm_mask(token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Boolean (B, L, L): query i may attend key j iff j is source (type 0), or target with j <= i.

    Written as in bert4keras: with c = cumsum(token types), i attends j iff
    c[j] <= c[i]; padding keys are never attended.
    """
    c = torch.cumsum(token_type_ids, dim=1)
    allowed = c[:, None, :] <= c[:, :, None]
    return allowed & attention_mask[:, None, :].bool()


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L, L) boolean -> (B, 1, L, L) additive mask that RoFormer's attention adds to its scores."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)[:, None]


def contrastive_loss(vectors: torch.Tensor, scale: float, anchors: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """In-batch InfoNCE: the first ``anchors`` = 2B rows are pairs, row i's positive being
    row (i + B) mod 2B; every other row, including any rows after the 2B (hard
    negatives), is a negative.

    Returns the loss and the accuracy of picking the partner (self-similarity excluded).
    """
    n = vectors.shape[0] if anchors is None else anchors
    v = F.normalize(vectors.float(), dim=-1)
    sims = scale * v[:n] @ v.T
    sims = sims.masked_fill(torch.eye(n, vectors.shape[0], dtype=torch.bool, device=v.device), float("-inf"))
    target = (torch.arange(n, device=v.device) + n // 2) % n
    return F.cross_entropy(sims, target), (sims.argmax(-1) == target).float().mean()


POOLINGS = ("mean", "cls", "first-last-avg")


def cosent_loss(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                scale: float) -> torch.Tensor:
    """CoSENT: log(1 + sum over row pairs (i, j) of one group with score_i > score_j of
    exp(scale * (cos_j - cos_i))). It ranks the pairs' cosines by their labels, which is what
    Spearman measures, and only compares rows of the same file (labels of different files
    are not on one scale). Zero-loss (log 1) when no such (i, j) exists.
    """
    cos = F.cosine_similarity(a.float(), b.float(), dim=-1) * scale
    diff = cos[None, :] - cos[:, None]                       # [i, j] = cos_j - cos_i
    valid = (scores[:, None] > scores[None, :]) & (groups[:, None] == groups[None, :])
    diff = diff.masked_fill(~valid, float("-inf"))
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.flatten()]), 0)


def pool(hidden: torch.Tensor | tuple, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vectors: the [CLS] state, the mean of the last states over positions where mask is 1,
    or ``first-last-avg`` (BERT-whitening / SimCSE's pooling): that mean taken over the average of the
    embedding output and the last layer, which keeps each token's own identity next to its context.

    ``hidden`` is the last (B, L, H) states, or all hidden states (embeddings first) for first-last-avg.
    """
    if pooling == "first-last-avg":
        hidden = (hidden[0] + hidden[-1]) / 2
    if pooling == "cls":
        return hidden[:, 0]
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def run_encoder(encoder, pooling: str, **inputs):
    """(states for ``pool``, last hidden state) of a RoFormerModel call; all layers only when pooling needs them."""
    out = encoder(**inputs, output_hidden_states=pooling == "first-last-avg")
    return (out.hidden_states if pooling == "first-last-avg" else out.last_hidden_state), out.last_hidden_state


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    v = F.normalize(vectors.float(), dim=-1)
    return v @ v.T


class SimModel(nn.Module):
    """The training module: a RoFormerForCausalLM run under the UniLM mask.

    Returns the sentence vectors of the sources (pooled as ``config.sentence_pooling``)
    and the LM logits at the requested positions only (a vocabulary-sized projection
    of every position would waste most of the step).
    """

    def __init__(self, config: RoFormerConfig):
        super().__init__()
        hf_logging.set_verbosity_error()   # RoFormerForCausalLM warns when is_decoder=False; we pass our own mask
        self.lm = RoFormerForCausalLM(config)
        hf_logging.set_verbosity_warning()
        self.pooling = getattr(config, "sentence_pooling", "cls")

    def forward(self, input_ids, token_type_ids, attention_mask, label_positions=None):
        dtype = next(self.parameters()).dtype
        mask = additive_mask(unilm_mask(token_type_ids, attention_mask), dtype)
        states, hidden = run_encoder(self.lm.roformer, self.pooling, input_ids=input_ids,
                                     token_type_ids=token_type_ids, attention_mask=mask)
        logits = None
        if label_positions is not None:
            logits = self.lm.cls(hidden[label_positions[0], label_positions[1]])
        source = (token_type_ids == 0) & (attention_mask == 1)
        return pool(states, source, self.pooling), logits


class RoFormerSimObjective:
    name = "roformer-sim"
    hf_auto_class = "AutoModel"

    def __init__(self, cfg, tokenizer=None):
        self.cfg = cfg
        self.opt = parse_section(RoFormerSimConfig, cfg.objective, f"configs/{cfg.model}.yaml")
        if self.opt.pooling not in POOLINGS:
            raise ValueError(f"configs/{cfg.model}.yaml: objective.pooling must be one of {', '.join(POOLINGS)}, "
                             f"got '{self.opt.pooling}'")
        self.tokenizer = tok = load_tokenizer(cfg, tokenizer, required=("pad", "cls", "sep", "mask"))
        self.train_dir = cfg.data.clean_dir
        self.valid_dir = cfg.data.clean_dir
        self.pair_sets = load_pair_files(self.opt) if self.opt.pair_file else []
        self.pairs = [p for ps, _, _ in self.pair_sets for p in ps]
        self.negatives = [n for _, ns, _ in self.pair_sets for n in ns]
        # CoSENT draws from files whose labels differ (a file of unlabeled pairs cannot rank).
        self.scored = [(g, rows) for g, (_, _, rows) in enumerate(self.pair_sets) if len({r[2] for r in rows}) > 1]
        if self.opt.cosent_weight > 0 and not self.scored:
            raise ValueError(f"configs/{cfg.model}.yaml: objective.cosent_weight={self.opt.cosent_weight} needs an "
                             f"objective.pair_file with labels that differ within a file (got "
                             f"'{self.opt.pair_file}')")
        self._teacher = None

    # -- model -------------------------------------------------------------
    def model_config(self) -> RoFormerConfig:
        a, t, tok = self.cfg.arch, self.cfg.train, self.tokenizer
        return RoFormerConfig(
            vocab_size=len(tok), embedding_size=a.d_model, hidden_size=a.d_model,
            num_hidden_layers=a.num_layers, num_attention_heads=a.num_heads, intermediate_size=a.d_ff,
            hidden_act=a.feed_forward_proj, hidden_dropout_prob=a.dropout_rate,
            attention_probs_dropout_prob=a.dropout_rate,
            max_position_embeddings=max(self.opt.max_position_embeddings, t.max_source_len + t.max_target_len + 3),
            type_vocab_size=2, pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id, is_decoder=False, tie_word_embeddings=True,
            architectures=["RoFormerForCausalLM"], sentence_pooling=self.opt.pooling,
        )

    def build_model(self) -> SimModel:
        return SimModel(self.model_config())

    # -- data --------------------------------------------------------------
    def make_pair(self, record: dict, rng: random.Random) -> tuple[str, str]:
        """A (source, target) pair of similar sentences from one record (see the module docstring)."""
        if "text_a" in record and "text_b" in record:
            return record["text_a"], record["text_b"]
        from pipeline.sentences import split_sentences
        o = self.opt
        sents = [s for s in split_sentences(record["text"], max_len=o.max_sentence_chars)
                 if len(s) >= o.min_sentence_chars] or [record["text"][:o.max_sentence_chars]]
        i = rng.randrange(len(sents))
        if len(sents) > 1 and rng.random() < o.neighbor_prob:
            j = i + 1 if i + 1 < len(sents) and (i == 0 or rng.random() < 0.5) else i - 1
            return sents[i], sents[j]
        return sents[i], sents[i]

    def noise(self, ids: list[int], rng: random.Random) -> list[int]:
        """BART-style corruption of a source: token deletion, then [MASK] replacement."""
        o, mask_id = self.opt, self.tokenizer.mask_token_id
        if not ids or rng.random() >= o.noise_prob:
            return ids
        kept = [t for t in ids if rng.random() >= o.delete_ratio] or ids[:1]
        return [mask_id if rng.random() < o.mask_ratio else t for t in kept]

    def encode_pairs(self, pairs: list[tuple[str, str]], rng: random.Random | None = None,
                     negatives: list[str] = (), scored: list[tuple[str, str, float, int]] = ()) -> dict:
        """2B UniLM sequences: rows [0, B) are a_i -> b_i, rows [B, 2B) are b_i -> a_i;
        then one source-only row ``[CLS] n [SEP]`` per hard negative (no target, no noise);
        then, for K labeled (a, b, score, file) rows for CoSENT, K source-only rows of the a's and K of the b's."""
        rng = rng or random
        t, tok = self.cfg.train, self.tokenizer
        texts = [a for a, _ in pairs] + [b for _, b in pairs] + list(negatives)
        texts += [r[0] for r in scored] + [r[1] for r in scored]
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        n = len(pairs)
        cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
        rows, types = [], []
        for k in range(2 * n):
            src = self.noise(ids[k][:t.max_source_len], rng)
            tgt = ids[(k + n) % (2 * n)][:t.max_target_len]
            rows.append([cls, *src, sep, *tgt, sep])
            types.append([0] * (len(src) + 2) + [1] * (len(tgt) + 1))
        for neg in ids[2 * n:]:
            rows.append([cls, *neg[:t.max_source_len], sep])
            types.append([0] * len(rows[-1]))
        width = max(map(len, rows))
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, (r, ty) in enumerate(zip(rows, types)):
            input_ids[k, :len(r)] = torch.tensor(r)
            token_type_ids[k, :len(r)] = torch.tensor(ty)
            attention_mask[k, :len(r)] = 1
        # Position p predicts token p+1 wherever p+1 is a (non-pad) target token.
        is_label = torch.zeros_like(attention_mask, dtype=torch.bool)
        is_label[:, :-1] = (token_type_ids[:, 1:] == 1) & (attention_mask[:, 1:] == 1)
        rows_idx, cols_idx = is_label.nonzero(as_tuple=True)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
                "label_positions": torch.stack([rows_idx, cols_idx]),
                "labels": input_ids[rows_idx, cols_idx + 1],
                "cosent_scores": torch.tensor([float(r[2]) for r in scored]),
                "cosent_groups": torch.tensor([int(r[3]) for r in scored], dtype=torch.long)}

    def collate(self, records: list[dict]) -> dict[str, torch.Tensor]:
        rng = random  # the trainer seeds and checkpoints Python's RNG: pairs and noise resume exactly
        pairs, negatives = [self.make_pair(r, rng) for r in records], []
        if self.pair_sets:
            for i in range(len(pairs)):
                if rng.random() < self.opt.pair_file_ratio:
                    pairs[i], neg = self.draw_labeled(rng)
                    negatives += [neg] if neg is not None else []
        if self.opt.swap_negative_prob > 0:
            for a, _ in pairs:
                if rng.random() < self.opt.swap_negative_prob:
                    swapped = swap_words(a, rng)
                    negatives += [swapped] if swapped is not None else []
        scored = []
        if self.opt.cosent_weight > 0 and self.scored:
            one_file = rng.choice(self.scored) if self.opt.cosent_one_file else None
            for _ in range(self.opt.cosent_rows):
                g, rows = one_file or rng.choice(self.scored)
                scored.append((*rng.choice(rows), g))
        return self.encode_pairs(pairs, rng, negatives, scored)

    def draw_labeled(self, rng: random.Random) -> tuple[tuple[str, str], str | None]:
        """One pair_file row: ((a, b), None) for a similar pair, ((a, a), n) for a hard negative n of a."""
        o = self.opt
        pairs, negatives = rng.choice(self.pair_sets)[:2] if o.pair_file_balanced else (self.pairs, self.negatives)
        if negatives and (not pairs or rng.random() < o.pair_negative_ratio):
            a, neg = rng.choice(negatives)
            return (a, a), neg
        return rng.choice(pairs), None

    @staticmethod
    def tokens_in(batch: dict) -> int:
        return int(batch["attention_mask"].sum())

    # -- loss --------------------------------------------------------------
    def loss(self, model, batch: dict):
        o = self.opt
        vectors, logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                                batch["label_positions"])
        seq2seq = F.cross_entropy(logits.float(), batch["labels"])
        anchors = int((batch["token_type_ids"] == 1).any(1).sum())   # pair rows; then hard negatives, CoSENT rows
        k = len(batch.get("cosent_scores", ()))
        contrastive, acc = contrastive_loss(vectors[:len(vectors) - 2 * k], o.scale, anchors)
        loss = o.seq2seq_weight * seq2seq + o.contrastive_weight * contrastive
        terms = {"seq2seq_loss": seq2seq.item(), "contrastive_loss": contrastive.item(), "contrastive_acc": acc.item()}
        if k:
            cosent = cosent_loss(vectors[-2 * k:-k], vectors[-k:], batch["cosent_scores"], batch["cosent_groups"],
                                 o.cosent_scale)
            loss = loss + o.cosent_weight * cosent
            terms["cosent_loss"] = cosent.item()
        if o.teacher:
            distill = self.distill_loss(vectors, batch)
            loss = loss + o.distill_weight * distill
            terms["distill_loss"] = distill.item()
        return loss, terms

    def teacher(self, device):
        """The frozen teacher encoder (loaded once, on the batch's device)."""
        if self._teacher is None:
            from transformers import AutoModel
            t = AutoModel.from_pretrained(self.opt.teacher)
            if t.config.vocab_size != len(self.tokenizer):
                raise ValueError(f"objective.teacher {self.opt.teacher}: vocabulary size {t.config.vocab_size} "
                                 f"differs from the tokenizer's {len(self.tokenizer)}; distillation needs the same vocabulary")
            self._teacher = t.eval().requires_grad_(False)
        return self._teacher.to(device)

    def distill_loss(self, vectors: torch.Tensor, batch: dict) -> torch.Tensor:
        """MSE between the student's and the teacher's in-batch cosine matrices (diagonal excluded)."""
        source = (batch["token_type_ids"] == 0) & (batch["attention_mask"] == 1)
        ids = batch["input_ids"] * source
        with torch.no_grad():
            teacher = self.teacher(ids.device)
            t_pooling = getattr(teacher.config, "sentence_pooling", "cls")
            states, _ = run_encoder(teacher, t_pooling, input_ids=ids, attention_mask=source.long(),
                                    token_type_ids=torch.zeros_like(ids))
            t_vec = pool(states, source, t_pooling)
        off = ~torch.eye(len(vectors), dtype=torch.bool, device=vectors.device)
        return F.mse_loss(cosine_matrix(vectors)[off], cosine_matrix(t_vec)[off])

    # -- validation --------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, records: list[dict]) -> dict[str, float]:
        """Top-1 in-batch retrieval accuracy of the partner sentence on held-out pairs (no noise)."""
        if len(records) < 2:
            return {}
        rng = random.Random(0)
        saved, self.opt.noise_prob = self.opt.noise_prob, 0.0
        batch = self.encode_pairs([self.make_pair(r, rng) for r in records], rng)
        self.opt.noise_prob = saved
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        vectors, _ = model(*(batch[k].to(device) for k in ("input_ids", "token_type_ids", "attention_mask")))
        model.train(was_training)
        _, acc = contrastive_loss(vectors, self.opt.scale)
        return {"retrieval_acc": acc.item()}

    # -- export ------------------------------------------------------------
    def export(self, state_dict: dict, out_dir: str | Path) -> None:
        """Write a Hugging Face folder: AutoModel -> RoFormerModel (sentence vectors: see ``encode``),
        AutoModelForCausalLM -> RoFormerForCausalLM (generation with the UniLM mask, see generate_similar)."""
        model = RoFormerForCausalLM(self.model_config())
        state = {k[len("lm."):]: v for k, v in state_dict.items() if k.startswith("lm.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        # Tied LM-head weight/bias may appear once in a consolidated (ZeRO-3) state dict.
        missing = [k for k in missing if k not in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")]
        if missing or unexpected:
            raise RuntimeError(f"export: state dict mismatch (missing {missing[:5]}, unexpected {unexpected[:5]})")
        model.save_pretrained(out_dir, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)


def swap_words(text: str, rng: random.Random) -> str | None:
    """``text`` with two different jieba words (not punctuation; multi-character ones when there are
    two) swapped, or None if it has fewer than two.

    PAWS builds its hard negatives this way: the same words in another order usually
    mean something else, and a bag-of-words encoder cannot tell them apart.
    """
    from tokenizer.jieba_util import cut

    words = cut(text)
    slots = [i for i, w in enumerate(words) if any(ch.isalnum() for ch in w)]
    longer = [i for i in slots if len(words[i]) > 1]   # swap whole words/names first, as PAWS does
    slots = longer if len(longer) >= 2 else slots
    for _ in range(8):
        if len(slots) < 2:
            return None
        i, j = rng.sample(slots, 2)
        if words[i] != words[j]:
            words[i], words[j] = words[j], words[i]
            return "".join(words)
    return None


def pair_file_paths(spec: str) -> list[str]:
    """``objective.pair_file``: comma-separated files or globs, each of which must match."""
    import glob

    paths = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        found = sorted(glob.glob(item))
        if not found:
            raise ValueError(f"objective.pair_file: {item} matches no file")
        paths += found
    return paths


def load_pair_files(opt: RoFormerSimConfig) -> list[tuple[list, list, list]]:
    """(similar pairs, hard-negative rows, all rows as (s1, s2, score)) of each TSV file ``s1\\ts2[\\tlabel]``.

    An unlabeled row is a similar pair. A label is divided by its file's largest
    label (0/1 files and 0-5 STS-B scores alike): >= pair_positive_score is a pair,
    <= pair_negative_score a hard-negative row, anything between is left out.
    """
    sets = []
    for path in pair_file_paths(opt.pair_file):
        rows, pairs, negatives, scored = [], [], [], []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                cols = [c.strip() for c in line.rstrip("\n").split("\t")]
                if len(cols) < 2 or not cols[0] or not cols[1]:
                    continue
                try:
                    label = float(cols[2]) if len(cols) >= 3 and cols[2] else None
                except ValueError:
                    continue   # a header line
                rows.append((cols[0], cols[1], label))
        top = max((r[2] for r in rows if r[2] is not None), default=None)
        for a, b, label in rows:
            score = 1.0 if label is None else label / top if top > 0 else 0.0
            scored.append((a, b, score))
            if score >= opt.pair_positive_score:
                pairs.append((a, b))
            elif score <= opt.pair_negative_score:
                negatives.append((a, b))
        sets.append((pairs, negatives, scored))
    if not any(pairs for pairs, _, _ in sets):
        raise ValueError(f"objective.pair_file {opt.pair_file}: no similar pairs found")
    return sets


# ---------------------------------------------------------------- inference helpers
@torch.no_grad()
def encode(model, tokenizer, texts: list[str], batch_size: int = 64, max_len: int = 64) -> torch.Tensor:
    """Sentence vectors of ``[CLS] text [SEP]`` from a RoFormerModel (or a RoFormerForCausalLM's encoder),
    pooled as its ``config.sentence_pooling`` says ("cls" for configs that do not say)."""
    encoder = getattr(model, "roformer", model)
    device = next(encoder.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), encoder.config.hidden_size)
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in idx], max_length=max_len + 2, truncation=True, padding=True,
                          return_tensors="pt")
        mask = batch["attention_mask"].to(device)
        pooling = getattr(encoder.config, "sentence_pooling", "cls")
        states, _ = run_encoder(encoder, pooling, input_ids=batch["input_ids"].to(device), attention_mask=mask,
                                token_type_ids=torch.zeros_like(batch["input_ids"]).to(device))
        out[idx] = pool(states, mask, pooling).float().cpu()
    return out


@torch.no_grad()
def generate_similar(model, tokenizer, text: str, n: int = 8, k: int = 3, max_new_tokens: int = 32,
                     top_p: float = 0.95, seed: int = 0) -> list[str]:
    """SimBERT's gen_synonyms: sample n continuations under the UniLM mask, keep the k most similar.

    ``model`` is a RoFormerForCausalLM. Each step re-runs the full sequence with the
    UniLM mask (source bidirectional, target causal), so no cache semantics are needed.
    """
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    src = tokenizer(text, add_special_tokens=False)["input_ids"][:64]
    seqs = torch.tensor([[cls, *src, sep]] * n)
    types = torch.zeros_like(seqs)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_new_tokens):
        attn = torch.ones_like(seqs)
        mask = additive_mask(unilm_mask(types, attn), next(model.parameters()).dtype)
        logits = model(input_ids=seqs.to(device), token_type_ids=types.to(device),
                       attention_mask=mask.to(device)).logits[:, -1].float().cpu()
        probs = torch.softmax(logits, -1)
        sorted_p, sorted_i = probs.sort(-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        choice = torch.multinomial(sorted_p / sorted_p.sum(-1, keepdim=True), 1, generator=gen)
        nxt = sorted_i.gather(-1, choice).squeeze(-1)
        nxt[done] = sep
        seqs = torch.cat([seqs, nxt[:, None]], 1)
        types = torch.cat([types, torch.ones(n, 1, dtype=torch.long)], 1)
        done |= nxt == sep
        if done.all():
            break
    outs = []
    for row in seqs[:, len(src) + 2:].tolist():
        row = row[:row.index(sep)] if sep in row else row
        s = tokenizer.decode(row, skip_special_tokens=True)
        if s and s != text and s not in outs:
            outs.append(s)
    if not outs:
        return []
    vecs = F.normalize(encode(model, tokenizer, [text, *outs]), dim=-1)
    order = (vecs[1:] @ vecs[0]).argsort(descending=True).tolist()
    return [outs[i] for i in order[:k]]
