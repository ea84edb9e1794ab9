"""RoFormer-Sim (SimBERTv2): one RoFormer that both retrieves and generates similar sentences.

Recipe (Su Jianlin, "SimBERTv2来了", 2021): RoFormer-Sim = RoFormer + UniLM + contrastive
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
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import RoFormerConfig

from pipeline.typed_config import ConfigError
from pretrain.models import EncoderArch, encoder_config_kwargs
from pretrain.objectives.base import Objective, ObjectiveSpec, Options, matmul_params
from pretrain.objectives.roformer_sim.inference import encode, generate_similar  # noqa: F401
from pretrain.objectives.roformer_sim.model import (POOLINGS, SimModel, additive_mask, contrastive_loss,  # noqa: F401
                                                    cosent_loss, cosine_matrix, pool, pool_segments, run_encoder,
                                                    unilm_mask)
from pretrain.packing import model_mask, pack_sequences
from pretrain.objectives.roformer_sim.pairs import (bart_noise, load_pair_files, make_pair,  # noqa: F401
                                                    neighbor_pairs, pair_file_paths, pick_pair, sentences_of,
                                                    swap_words)
from pretrain.token_shards import Encoded

@dataclass
class RoFormerSimConfig(Options):
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
    pooling: Literal["mean", "cls", "first-last-avg"] = "mean"   # sentence vector (see the module docstring)
    swap_negative_prob: float = 0.0     # per anchor: its jieba words with two swapped joins as a hard negative
    cosent_weight: float = 0.0          # CoSENT ranking loss on labeled pair_file rows (0 = off)
    cosent_rows: int = 16               # labeled rows per batch for it (both sentences encoded alone)
    cosent_scale: float = 20.0          # CoSENT's cosine scale (lambda)
    cosent_one_file: bool = False       # all of a batch's CoSENT rows from one file (more comparable pairs)
    teacher: str = ""                   # exported RoFormer-Sim folder for distillation ("" = none)
    distill_weight: float = 1.0
    max_position_embeddings: int = 512


class RoFormerSimObjective(Objective):
    spec = ObjectiveSpec(
        name="roformer-sim", arch=EncoderArch, options=RoFormerSimConfig, data="clean", tokens="sentences",
        eval_tasks=("sts",), finetune_suite=("thucnews_titles", "lcqmc", "bq"),
        intended_use="Chinese sentence similarity and retrieval (sentence vectors compared by cosine, pooled as "
                     "`sentence_pooling` in config.json says: mean over tokens, [CLS], or first-last-avg; "
                     "`pretrain.objectives.roformer_sim.encode` does it) and paraphrase generation.")

    @classmethod
    def options_from_hf(cls, config) -> dict:
        if config.model_type != "roformer":
            from pretrain.init import InitError
            raise InitError(f"roformer-sim starts from a RoFormer checkpoint, not model_type '{config.model_type}'")
        return {"max_position_embeddings": config.max_position_embeddings}

    def init_state(self, state: dict, config) -> dict:
        """A RoFormer masked LM / causal LM / bare encoder (e.g. this project's mlm-proposal export with
        objective.encoder=roformer: the SimBERTv2 chain) under ``lm.``."""
        from pretrain.init import map_prefixes
        return map_prefixes(state, [("roformer.", "lm.roformer."), ("cls.predictions.", "lm.cls.predictions."),
                                    ("embeddings.", "lm.roformer.embeddings."), ("encoder.", "lm.roformer.encoder.")],
                            drop=("pooler.", "roformer.pooler."))

    def __init__(self, cfg, tokenizer=None):
        super().__init__(cfg, tokenizer)
        self.opt = self.opts
        self.pair_sets = load_pair_files(self.opt) if self.opt.pair_file else []
        self.pairs = [p for ps, _, _ in self.pair_sets for p in ps]
        self.negatives = [n for _, ns, _ in self.pair_sets for n in ns]
        # CoSENT draws from files whose labels differ (a file of unlabeled pairs cannot rank).
        self.scored = [(g, rows) for g, (_, _, rows) in enumerate(self.pair_sets) if len({r[2] for r in rows}) > 1]
        if self.opt.cosent_weight > 0 and not self.scored:
            raise ConfigError(f"configs/{cfg.model}.yaml: objective.cosent_weight={self.opt.cosent_weight} needs an "
                              f"objective.pair_file with labels that differ within a file (got "
                              f"'{self.opt.pair_file}')")
        self._teacher = None

    # -- model -------------------------------------------------------------
    def model_config(self) -> RoFormerConfig:
        a, t, tok = self.cfg.arch, self.cfg.train, self.tokenizer
        positions = max(self.opt.max_position_embeddings, t.max_source_len + t.max_target_len + 3)
        return RoFormerConfig(
            embedding_size=a.d_model, **encoder_config_kwargs(a, len(tok), tok.pad_token_id, positions),
            type_vocab_size=2, bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id, is_decoder=False, tie_word_embeddings=True,
            architectures=["RoFormerForCausalLM"], sentence_pooling=self.opt.pooling,
        )

    def build_model(self) -> SimModel:
        return SimModel(self.model_config())

    # -- data --------------------------------------------------------------
    def make_pair(self, record: dict, rng: random.Random) -> tuple[str, str]:
        return make_pair(record, self.opt, rng)

    def noise(self, ids: list[int], rng: random.Random) -> list[int]:
        return bart_noise(ids, self.opt, self.tokenizer.mask_token_id, rng)

    def encode_pairs(self, pairs: list[tuple[str, str]], rng: random.Random | None = None,
                     negatives: list[str] = (), scored: list[tuple[str, str, float, int]] = (),
                     packing: bool = False) -> dict:
        """2B UniLM sequences (texts or token ids): [0, B) are a_i -> b_i, [B, 2B) are b_i -> a_i;
        then one source-only sequence ``[CLS] n [SEP]`` per hard negative (no target, no noise);
        then, for K labeled (a, b, score, file) rows for CoSENT, K source-only sequences of the a's and K
        of the b's. One sequence per padded row, or with ``packing`` several per row
        (``pretrain.packing``: ``segment_ids`` number the sequences in this order)."""
        rng = rng or random
        t, tok = self.cfg.train, self.tokenizer
        items = [a for a, _ in pairs] + [b for _, b in pairs] + list(negatives)
        items += [r[0] for r in scored] + [r[1] for r in scored]
        ids = self.token_ids(items)
        n = len(pairs)
        cls, sep = tok.cls_token_id, tok.sep_token_id
        rows, types = [], []
        mask_id = tok.mask_token_id                  # a tokenizer attribute lookup costs more than the noise
        for k in range(2 * n):
            src = bart_noise(ids[k][:t.max_source_len], self.opt, mask_id, rng)
            tgt = ids[(k + n) % (2 * n)][:t.max_target_len]
            rows.append([cls, *src, sep, *tgt, sep])
            types.append([0] * (len(src) + 2) + [1] * (len(tgt) + 1))
        for neg in ids[2 * n:]:
            rows.append([cls, *neg[:t.max_source_len], sep])
            types.append([0] * len(rows[-1]))
        width = t.max_source_len + t.max_target_len + 3
        batch = pack_sequences(rows, width, tok.pad_token_id, extra={"token_type_ids": types}, packing=packing)
        input_ids, token_type_ids, attention_mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
        # Position p predicts token p+1 wherever p+1 is a (non-pad) target token.
        is_label = torch.zeros_like(attention_mask, dtype=torch.bool)
        is_label[:, :-1] = (token_type_ids[:, 1:] == 1) & (attention_mask[:, 1:] == 1)
        rows_idx, cols_idx = is_label.nonzero(as_tuple=True)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
                "segment_ids": batch["segment_ids"], "num_sequences": len(rows), "anchors": 2 * n,
                "label_positions": torch.stack([rows_idx, cols_idx]),
                "labels": input_ids[rows_idx, cols_idx + 1],
                "cosent_scores": torch.tensor([float(r[2]) for r in scored]),
                "cosent_groups": torch.tensor([int(r[3]) for r in scored], dtype=torch.long)}

    def token_ids(self, items: list) -> list[list[int]]:
        """Token ids of texts (one tokenizer call) and of id sequences (as they are), in order."""
        texts = [x for x in items if isinstance(x, str)]
        encoded = iter(self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else ())
        return [next(encoded) if isinstance(x, str) else list(x) for x in items]

    def collate(self, records: list[dict]) -> dict[str, torch.Tensor]:
        rng = random  # the trainer seeds and checkpoints Python's RNG: pairs and noise resume exactly
        return self.pair_batch([self.make_pair(r, rng) for r in records], rng)

    @classmethod
    def token_options(cls, cfg) -> dict:
        o = cfg.objective
        return {"min_sentence_chars": o.min_sentence_chars, "max_sentence_chars": o.max_sentence_chars}

    def encode_records(self, records: list[dict], encoder) -> list[Encoded | str]:
        """Each document's sentences (``sentences_of``) as token ids; a labeled text_a/text_b record
        as its two sentences, flagged."""
        shapes, texts = [], []
        for r in records:
            if isinstance(r.get("text_a"), str) and isinstance(r.get("text_b"), str):
                sents, flag = [r["text_a"], r["text_b"]], 1
            elif isinstance(r.get("text"), str):
                sents, flag = sentences_of(r["text"], self.opt), 0
            else:
                shapes.append("no_text")
                continue
            shapes.append((len(sents), flag))
            texts += sents
        ids = iter(encoder.encode(texts))
        return [s if isinstance(s, str) else Encoded([next(ids) for _ in range(s[0])], flag=s[1]) for s in shapes]

    def collate_tokens(self, samples: list[dict], seed: int) -> dict[str, torch.Tensor]:
        rng = random.Random(seed)
        pairs = []
        for s in samples:
            sents = s["sentence_ids"]             # copied from the shard when picked
            a, b = (sents[0], sents[1]) if s["labeled"] else pick_pair(sents, self.opt, rng)
            pairs.append((a.tolist(), b.tolist()))
        return self.pair_batch(pairs, rng)

    def pair_batch(self, pairs: list[tuple], rng) -> dict[str, torch.Tensor]:
        """The batch of these pairs plus the pair_file rows, word-swap negatives and CoSENT rows drawn here."""
        negatives = []
        if self.pair_sets:
            for i in range(len(pairs)):
                if rng.random() < self.opt.pair_file_ratio:
                    pairs[i], neg = self.draw_labeled(rng)
                    negatives += [neg] if neg is not None else []
        if self.opt.swap_negative_prob > 0:
            for a, _ in pairs:
                if rng.random() < self.opt.swap_negative_prob:
                    swapped = swap_words(a if isinstance(a, str) else self.tokenizer.decode(a), rng)
                    negatives += [swapped] if swapped is not None else []
        scored = []
        if self.opt.cosent_weight > 0 and self.scored:
            one_file = rng.choice(self.scored) if self.opt.cosent_one_file else None
            for _ in range(self.opt.cosent_rows):
                g, rows = one_file or rng.choice(self.scored)
                scored.append((*rng.choice(rows), g))
        return self.encode_pairs(pairs, rng, negatives, scored, self.cfg.train.packing)

    def draw_labeled(self, rng: random.Random) -> tuple[tuple[str, str], str | None]:
        """One pair_file row: ((a, b), None) for a similar pair, ((a, a), n) for a hard negative n of a."""
        o = self.opt
        pairs, negatives = rng.choice(self.pair_sets)[:2] if o.pair_file_balanced else (self.pairs, self.negatives)
        if negatives and (not pairs or rng.random() < o.pair_negative_ratio):
            a, neg = rng.choice(negatives)
            return (a, a), neg
        return rng.choice(pairs), None

    # -- loss --------------------------------------------------------------
    def train_flops(self, model, batch: dict) -> float:
        """6 x (matmul parameters x tokens + the LM head's x the target tokens, the only positions it
        runs on), plus 2 x the teacher's x tokens for its forward when distilling."""
        cls = model.lm.cls
        tokens = self.tokens_in(batch)
        flops = 6.0 * (matmul_params(model, skip=(cls,)) * tokens + matmul_params(cls) * batch["labels"].numel())
        if self.opt.teacher and self._teacher is not None:
            flops += 2.0 * matmul_params(self._teacher) * tokens
        return flops

    def loss(self, model, batch: dict):
        o = self.opt
        vectors, logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                                batch["label_positions"], batch["segment_ids"], batch["num_sequences"])
        seq2seq = F.cross_entropy(logits.float(), batch["labels"])
        anchors = batch["anchors"]            # pair sequences; then hard negatives, CoSENT rows
        k = len(batch.get("cosent_scores", ()))
        contrastive, acc = contrastive_loss(vectors[:len(vectors) - 2 * k], o.scale, anchors)
        loss = o.seq2seq_weight * seq2seq + o.contrastive_weight * contrastive
        terms = {"seq2seq_loss": seq2seq.detach(), "contrastive_loss": contrastive.detach(), "contrastive_acc": acc}
        if k:
            cosent = cosent_loss(vectors[-2 * k:-k], vectors[-k:], batch["cosent_scores"], batch["cosent_groups"],
                                 o.cosent_scale)
            loss = loss + o.cosent_weight * cosent
            terms["cosent_loss"] = cosent.detach()
        if o.teacher:
            distill = self.distill_loss(vectors, batch)
            loss = loss + o.distill_weight * distill
            terms["distill_loss"] = distill.detach()
        return loss, terms      # device tensors: the trainer reads them at log steps

    def teacher(self, device):
        """The frozen teacher encoder (loaded once, on the batch's device)."""
        if self._teacher is None:
            from transformers import AutoModel
            t = AutoModel.from_pretrained(self.opt.teacher)
            if t.config.vocab_size != len(self.tokenizer):
                raise ConfigError(f"objective.teacher {self.opt.teacher}: vocabulary size {t.config.vocab_size} "
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
            seg = batch["segment_ids"]      # each source alone: its own segment's source keys only
            mask = model_mask(teacher, seg, allowed=source[:, None, :].expand(-1, seg.shape[1], -1))
            states, _ = run_encoder(teacher, t_pooling, input_ids=ids, attention_mask=mask,
                                    token_type_ids=torch.zeros_like(ids))
            t_vec = pool_segments(states, seg, source, t_pooling, len(vectors))
        off = ~torch.eye(len(vectors), dtype=torch.bool, device=vectors.device)
        return F.mse_loss(cosine_matrix(vectors)[off], cosine_matrix(t_vec)[off])

    # -- validation --------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, records: list[dict]) -> dict[str, float]:
        """Top-1 retrieval accuracy of each held-out sentence's neighbour among all 2N sentences of
        N neighbour pairs (no noise), and the chance level 1 / (2N - 1)."""
        pairs = neighbor_pairs(records, self.opt, max(2, self.cfg.train.eval_generate))
        if len(pairs) < 2:
            return {}
        rng = random.Random(0)
        saved, self.opt.noise_prob = self.opt.noise_prob, 0.0
        batch = self.encode_pairs(pairs, rng)
        self.opt.noise_prob = saved
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        vectors, _ = model(*(batch[k].to(device) for k in ("input_ids", "token_type_ids", "attention_mask")))
        model.train(was_training)
        _, acc = contrastive_loss(vectors, self.opt.scale)
        return {"retrieval_acc": acc.item(), "retrieval_chance": 1.0 / (2 * len(pairs) - 1), "retrieval_pairs": len(pairs)}

    # -- export ------------------------------------------------------------
    def hf_parts(self, model: SimModel) -> dict:
        """RoFormerForCausalLM: AutoModel gives the RoFormerModel encoder (sentence vectors: ``encode``),
        AutoModelForCausalLM the generator (``generate_similar``, under the UniLM mask)."""
        return {"": model.lm}
