"""ELECTRA: a small masked-LM generator feeds a discriminator that spots replaced tokens.

Recipe (Clark et al. 2020):
  1. mask 15% of the non-special tokens with [MASK];
  2. the generator (a BERT-style masked LM about 1/4 the discriminator's width:
     hidden size, attention heads and FFN all scaled, same depth) predicts them;
  3. each masked position is replaced by a token *sampled* from the generator's
     softmax (no gradient flows through the sampling);
  4. the discriminator labels every non-padding token "replaced" or "original";
     a sampled token that equals the original counts as original;
  5. loss = MLM (masked positions only) + lambda * RTD (all non-padding tokens), lambda = 50.

Generator and discriminator share one embedding module (token, position and
token-type embeddings and their LayerNorm) at the discriminator's embedding
size; the narrower generator projects it down with ``embeddings_project``, as
Hugging Face Electra does whenever ``embedding_size != hidden_size``. Both live
in one ``nn.Module`` so the DeepSpeed engine sees a single model and the shared
embedding is one set of parameters. The discriminator is the released model
(``RUN/export``); the generator goes to ``RUN/export/generator``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

from pipeline.typed_config import ConfigError, InvalidValue
from pretrain.models import EncoderArch, encoder_config_kwargs
from pretrain.objectives.base import Objective, ObjectiveSpec, Options, mask_budget, matmul_params, uniform_order
from pretrain.packing import encoder_kwargs, pack_sequences, window_segments


@dataclass
class ElectraOptions(Options):
    """The ``objective:`` section of configs/electra.yaml."""
    generator_size: float = 0.25        # generator hidden size, heads and FFN as a fraction of the discriminator's
    mask_prob: float = 0.15             # share of non-special tokens masked per sequence
    rtd_weight: float = 50.0            # lambda in MLM + lambda * RTD
    embedding_size: int = 0             # shared embedding width; 0 = discriminator hidden size (ELECTRA-small: 128)
    max_position_embeddings: int = 512
    temperature: float = 1.0            # generator softmax temperature for sampling replacements

    def __post_init__(self):
        if not 0 < self.mask_prob < 1:
            raise InvalidValue("mask_prob", f"must be in (0, 1), got {self.mask_prob}")
        if not 0 < self.generator_size <= 1:
            raise InvalidValue("generator_size", f"must be in (0, 1], got {self.generator_size}")
        if self.rtd_weight < 0:
            raise InvalidValue("rtd_weight", f"must be >= 0, got {self.rtd_weight}")
        if self.temperature <= 0:
            raise InvalidValue("temperature", f"must be > 0, got {self.temperature}")


# ---------------------------------------------------------------- masking and labels
def mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, mask_prob: float, mask_id: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask round(mask_prob * n) of the n maskable tokens of each row (at least one).

    Returns (generator input with [MASK] at the chosen positions, boolean mask of them).
    """
    order = uniform_order(maskable, generator)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    k = mask_budget(maskable.sum(dim=1), mask_prob)
    chosen = (rank < k[:, None]) & maskable
    masked = input_ids.masked_fill(chosen, mask_id)
    return masked, chosen


def replace_tokens(input_ids: torch.Tensor, mlm_mask, sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator input and labels: sampled tokens at the masked positions (a boolean mask, or
    (rows, columns) index tensors).

    Label 1 = replaced, i.e. the token differs from the original; a sample that
    happens to equal the original is labelled original (ELECTRA paper, sec. 2).
    """
    fake = input_ids.clone()
    fake[mlm_mask] = sampled
    return fake, (fake != input_ids).long()


def rtd_counts(logits: torch.Tensor, labels: torch.Tensor, active: torch.Tensor) -> dict[str, torch.Tensor]:
    """Replaced-token-detection counts over the active (non-padding) positions."""
    pred = (logits > 0).long()
    a = active.bool()
    replaced = (labels == 1) & a
    return {
        "tokens": a.sum(),
        "correct": ((pred == labels) & a).sum(),
        "original": ((labels == 0) & a).sum(),           # what always answering "original" gets right
        "replaced": replaced.sum(),
        "hit": (replaced & (pred == 1)).sum(),           # replaced tokens found (recall numerator)
        "flagged": ((pred == 1) & a).sum(),              # tokens called replaced (precision denominator)
    }


def _ratio(num, den):
    """num / den (0 when den is 0): a float, or a device tensor when given tensors (no host sync)."""
    if torch.is_tensor(num) or torch.is_tensor(den):
        return torch.as_tensor(num).float() / torch.as_tensor(den).float().clamp(min=1)
    den = float(den)
    return float(num) / den if den > 0 else 0.0


def rtd_metrics(c: dict) -> dict[str, float]:
    return {"rtd_acc": _ratio(c["correct"], c["tokens"]),
            "rtd_baseline_acc": _ratio(c["original"], c["tokens"]),
            "rtd_recall": _ratio(c["hit"], c["replaced"]),
            "rtd_precision": _ratio(c["hit"], c["flagged"])}


def rtd_auc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Probability that a replaced token scores above an original one (ties count half): the
    discriminator's ranking quality, which accuracy at threshold 0 hides while replaced tokens are
    a small minority (a young discriminator ranks well long before any score crosses 0)."""
    pos, neg = int(labels.sum()), int((labels == 0).sum())
    if not pos or not neg:
        return 0.5
    order = logits.double().argsort()
    _, inverse, counts = torch.unique_consecutive(logits.double()[order], return_inverse=True, return_counts=True)
    ranks = torch.empty(len(logits), dtype=torch.float64)
    ranks[order] = (counts.cumsum(0) - (counts - 1) / 2).double()[inverse]     # mean rank of each tie group
    return float((ranks[labels.bool()].sum() - pos * (pos + 1) / 2) / (pos * neg))


def sample_tokens(logits: torch.Tensor, temperature: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from softmax(logits / temperature), by inverse-CDF lookup.

    Same distribution as ``torch.multinomial(probs, 1)``, which on CPU draws an exponential
    variate for every vocabulary entry: a third of an ELECTRA-tiny step at batch 128. Here
    it is a cumulative sum and a binary search per row.
    """
    probs = F.softmax(logits.float() / temperature, dim=-1)
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


# ---------------------------------------------------------------- the model pair
def scaled_generator_config(disc: ElectraConfig, fraction: float) -> ElectraConfig:
    """The published generator shape: hidden, heads and FFN scaled by `fraction`, same depth."""
    cfg = copy.deepcopy(disc)
    cfg.hidden_size = max(1, int(round(disc.hidden_size * fraction)))
    cfg.num_attention_heads = max(1, int(round(disc.num_attention_heads * fraction)))
    cfg.intermediate_size = max(1, int(round(disc.intermediate_size * fraction)))
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ConfigError(f"objective.generator_size={fraction}: generator hidden size {cfg.hidden_size} "
                          f"is not divisible by its {cfg.num_attention_heads} attention heads")
    return cfg


class ElectraPair(torch.nn.Module):
    """Generator + discriminator with one shared embedding module; forward returns the ELECTRA loss."""

    def __init__(self, disc_config: ElectraConfig, gen_config: ElectraConfig, rtd_weight: float = 50.0,
                 temperature: float = 1.0):
        super().__init__()
        self.discriminator = ElectraForPreTraining(disc_config)
        self.generator = ElectraForMaskedLM(gen_config)
        self.rtd_weight, self.temperature = rtd_weight, temperature
        self.tie_embeddings()

    def tie_embeddings(self) -> None:
        """Make the generator use the discriminator's embedding module (and its output layer that matrix)."""
        shared = self.discriminator.electra.embeddings
        self.generator.electra.embeddings = shared
        self.generator.generator_lm_head.weight = shared.word_embeddings.weight

    def forward(self, input_ids, attention_mask, masked_input_ids, mlm_mask, segment_ids=None, position_ids=None,
                mlm_positions=None):
        """``mlm_positions`` (2, K): the masked (row, column) pairs in row-major order, as the collator
        computed them on the CPU, so nothing here waits for the device (else taken from mlm_mask)."""
        gen = self.generator
        rows, cols = mlm_positions if mlm_positions is not None else mlm_mask.nonzero(as_tuple=True)
        kw = encoder_kwargs(gen, attention_mask, segment_ids, position_ids)
        hidden = gen.electra(masked_input_ids, **kw).last_hidden_state
        # Predict only the masked positions: the vocabulary projection is the costly part.
        logits = gen.generator_lm_head(gen.generator_predictions(hidden[rows, cols])).float()
        targets = input_ids[rows, cols]
        mlm_loss = F.cross_entropy(logits, targets)
        with torch.no_grad():
            sampled = sample_tokens(logits.detach(), self.temperature)
        fake, labels = replace_tokens(input_ids, (rows, cols), sampled)
        kw = encoder_kwargs(self.discriminator, attention_mask, segment_ids, position_ids)
        disc_logits = self.discriminator(fake, **kw).logits.float()
        active = attention_mask.float()
        rtd = F.binary_cross_entropy_with_logits(disc_logits, labels.float(), reduction="none")
        rtd_loss = (rtd * active).sum() / active.sum().clamp(min=1)
        with torch.no_grad():
            counts = rtd_counts(disc_logits, labels, attention_mask)
            counts["mlm_correct"] = (logits.argmax(-1) == targets).sum()
            counts["mlm_total"] = targets.new_tensor(targets.numel())
        return {"loss": mlm_loss + self.rtd_weight * rtd_loss, "mlm_loss": mlm_loss, "rtd_loss": rtd_loss,
                "counts": counts, "rtd_logits": disc_logits.detach(), "rtd_labels": labels}


# ---------------------------------------------------------------- the objective
class ElectraObjective(Objective):
    spec = ObjectiveSpec(
        name="electra", arch=EncoderArch, options=ElectraOptions, data="clean", eval_tasks=("sts",),
        finetune_suite=("thucnews_titles", "chnsenticorp", "lcqmc", "cmrc2018"),
        intended_use="Chinese understanding: fine-tune the discriminator for classification, matching, "
                     "sequence labelling or reading comprehension; the generator is a small masked LM "
                     "released for completeness and continued pretraining.")

    @classmethod
    def check(cls, cfg, where: str) -> None:
        if cfg.train.max_source_len > cfg.objective.max_position_embeddings:
            raise ConfigError(f"{where}: key 'train.max_source_len' ({cfg.train.max_source_len}) exceeds "
                              f"objective.max_position_embeddings ({cfg.objective.max_position_embeddings})")
        a = cfg.arch
        try:
            scaled_generator_config(ElectraConfig(hidden_size=a.d_model, num_attention_heads=a.num_heads,
                                                  intermediate_size=a.d_ff), cfg.objective.generator_size)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def options_from_hf(cls, config) -> dict:
        if config.model_type not in ("electra", "bert", "roformer"):
            from pretrain.init import InitError
            raise InitError(f"electra starts from an ELECTRA discriminator or a BERT-style encoder, "
                            f"not model_type '{config.model_type}'")
        emb = getattr(config, "embedding_size", config.hidden_size)
        return {"embedding_size": 0 if emb == config.hidden_size else emb,
                "max_position_embeddings": config.max_position_embeddings}

    def init_state(self, state: dict, config) -> dict:
        """The discriminator from an ELECTRA discriminator (its head too) or a BERT-style encoder (fresh
        head); the generator from ``init.generator`` when given, else fresh. The generator's own
        embeddings are not loaded: ELECTRA shares the discriminator's."""
        from pretrain.init import map_prefixes, read_hf_config, read_weights, transplant_state, read_tokenizer
        body = config.model_type
        out = map_prefixes(state, [("electra.", "discriminator.electra."),
                                   ("discriminator_predictions.", "discriminator.discriminator_predictions."),
                                   (f"{body}.embeddings.", "discriminator.electra.embeddings."),
                                   (f"{body}.encoder.", "discriminator.electra.encoder."),
                                   ("embeddings.", "discriminator.electra.embeddings."),
                                   ("encoder.", "discriminator.electra.encoder.")])
        gen_dir = self.cfg.init.generator
        if gen_dir:
            gen_config = read_hf_config(gen_dir)
            want = self.generator_config()
            if (gen_config.hidden_size, gen_config.num_hidden_layers) != (want.hidden_size, want.num_hidden_layers):
                from pretrain.init import InitError
                raise InitError(f"init.generator {gen_dir}: hidden {gen_config.hidden_size} x {gen_config.num_hidden_layers} "
                                f"layers, but objective.generator_size={self.opts.generator_size} gives "
                                f"{want.hidden_size} x {want.num_hidden_layers}")
            gen = read_weights(gen_dir)
            if self.cfg.init.vocab == "project":
                gen, _ = transplant_state(gen, read_tokenizer(str(gen_dir)), self.tokenizer, self.cfg.init.new_rows,
                                          self.cfg.train.seed, gen_config.vocab_size)
            out.update(map_prefixes(gen, [("electra.", "generator.electra."), ("generator_", "generator.generator_")],
                                    drop=("electra.embeddings.",)))
        return out

    def __init__(self, cfg, tokenizer=None):
        super().__init__(cfg, tokenizer)
        self.is_special = torch.zeros(len(self.tokenizer), dtype=torch.bool)     # a lookup: faster than isin
        self.is_special[sorted(set(self.tokenizer.all_special_ids))] = True

    # -- model -------------------------------------------------------------
    def discriminator_config(self) -> ElectraConfig:
        a, o, tok = self.cfg.arch, self.opts, self.tokenizer
        return ElectraConfig(embedding_size=o.embedding_size or a.d_model,
                             **encoder_config_kwargs(a, len(tok), tok.pad_token_id, o.max_position_embeddings,
                                                    tok.bos_token_id, tok.eos_token_id))

    def generator_config(self) -> ElectraConfig:
        return scaled_generator_config(self.discriminator_config(), self.opts.generator_size)

    def build_model(self) -> ElectraPair:
        return ElectraPair(self.discriminator_config(), self.generator_config(),
                           rtd_weight=self.opts.rtd_weight, temperature=self.opts.temperature)

    # -- data --------------------------------------------------------------
    def collate(self, records: list[dict]) -> dict[str, torch.Tensor]:
        """[CLS] window [SEP] per document (a random window of a long one), packed into rows of
        max_source_len (``train.packing``, no document attending another) or one per padded row;
        then masked."""
        tok, room = self.tokenizer, self.cfg.train.max_source_len - 2
        rows = []
        for ids in tok([r["text"] for r in records], add_special_tokens=False, verbose=False)["input_ids"]:
            if len(ids) > room:
                start = int(torch.randint(0, len(ids) - room + 1, ()).item())
                ids = ids[start:start + room]
            rows.append([tok.cls_token_id, *ids, tok.sep_token_id])
        return self.masked_batch(rows)

    def collate_tokens(self, samples: list[dict], seed: int) -> dict[str, torch.Tensor]:
        """[CLS] + a packed window (documents separated by [SEP]), padded (or packed), then masked."""
        cls = [self.tokenizer.cls_token_id]
        batch = self.masked_batch([cls + s["ids"].tolist() for s in samples], torch.Generator().manual_seed(seed))
        if self.cfg.train.packing:        # a document attends only itself, as on the text path
            batch.update(window_segments(batch["input_ids"], batch["attention_mask"], self.tokenizer.sep_token_id))
        return batch

    def masked_batch(self, rows: list, generator: torch.Generator | None = None) -> dict:
        """Rows padded or packed (train.packing), with mask_prob of their non-special tokens masked
        (the trainer's RNG if no generator)."""
        tok = self.tokenizer
        batch = pack_sequences(rows, self.cfg.train.max_source_len, tok.pad_token_id, packing=self.cfg.train.packing)
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        maskable = attention_mask.bool() & ~self.is_special[input_ids]
        masked, mlm_mask = mask_tokens(input_ids, maskable, self.opts.mask_prob, tok.mask_token_id, generator)
        return {**batch, "masked_input_ids": masked, "mlm_mask": mlm_mask, "mlm_positions": mlm_mask.nonzero().T}

    def train_flops(self, model, batch: dict) -> float:
        """6 x (generator and discriminator matmul parameters x tokens + the generator's vocabulary
        head x the masked tokens, the only positions it runs on). Shared embeddings count once,
        in the tied head."""
        gen = model.generator
        heads = (gen.generator_predictions, gen.generator_lm_head)
        head = sum(matmul_params(h) for h in heads)
        masked = int(batch["mlm_mask"].sum())
        return 6.0 * (matmul_params(model, skip=heads) * self.tokens_in(batch) + head * masked)

    def loss(self, model, batch: dict):
        out = model(**batch)
        c = out["counts"]
        terms = {"mlm_loss": out["mlm_loss"].detach(), "rtd_loss": out["rtd_loss"].detach(),
                 "mlm_acc": _ratio(c["mlm_correct"], c["mlm_total"]), **rtd_metrics(c)}
        terms.pop("rtd_precision")
        return out["loss"], terms

    # -- validation --------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, records: list[dict]) -> dict[str, float]:
        """RTD accuracy, the all-"original" baseline, recall and precision on held-out documents."""
        if not records:
            return {}
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        total: dict[str, float] = {}
        scores, truth = [], []
        bs = self.cfg.train.micro_batch_size
        for i in range(0, len(records), bs):
            batch = {k: v.to(device) for k, v in self.collate(records[i:i + bs]).items()}
            out = model(**batch)
            for k, v in out["counts"].items():
                total[k] = total.get(k, 0.0) + float(v)
            active = batch["attention_mask"].bool()
            scores.append(out["rtd_logits"][active].float().cpu())
            truth.append(out["rtd_labels"][active].cpu())
        model.train(was_training)
        return {**rtd_metrics(total), "rtd_auc": rtd_auc(torch.cat(scores), torch.cat(truth)),
                "mlm_acc": _ratio(total["mlm_correct"], total["mlm_total"])}

    # -- export ------------------------------------------------------------
    def hf_parts(self, model: ElectraPair) -> dict:
        """The discriminator (ElectraForPreTraining) and, in ``generator/``, the generator (ElectraForMaskedLM)."""
        return {"": model.discriminator, "generator": model.generator}
