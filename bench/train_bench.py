"""Training-runtime benchmark: our runtime against the strongest peer at the same precision.

Four model families, each with the same model, the same initial weights (seeded) and the same
documents in the same order for every runtime, measured in one run:

  t5       T5 v1.1 / mT5 (MT5ForConditionalGeneration) on T5-PEGASUS pseudo-summary pairs
  mlm      BERT masked LM (the mlm-proposal objective with uniform BERT masking)
  electra  ELECTRA (generator 1/4 of the discriminator, 15 % masking, loss = MLM + 50 RTD)
  sim      RoFormer-Sim (UniLM seq2seq + in-batch contrastive loss on sentence pairs)

Peers (what users run), each at fp32 and at bf16 (where a CPU's bf16 matmuls are slower than its
fp32 ones, as on the Intel hosts without AMX here, fp32 is what users run, and its strongest peer counts):

  plain            a bare loop: loss, backward, clip, torch AdamW (fused) step. t5: model(**batch).loss
                   on padded pairs; mlm: documents truncated to the sequence length, padded,
                   DataCollatorForLanguageModeling masks, BertForMaskedLM(**batch).loss (logits at
                   every position); electra: the Hugging Face heads as documented (generator logits
                   at every position, torch.multinomial sampling, ElectraForPreTraining's loss) on
                   one padded document per row; sim: one padded UniLM row per sequence
  plain-grouped, plain-compile, hf-trainer-compile  the fp32 forms of plain-bf16-grouped,
                   plain-bf16-compile and hf-trainer-bf16-compile below
  plain-bf16       the same loop under torch.autocast(bfloat16), not compiled (no recompiles when
                   shapes vary: Sim's label count does, per batch)
  plain-bf16-compile  the same loop under torch.autocast(bfloat16) with torch.compile of the
                   loss computation (what nanoT5 users run)
  plain-bf16-grouped  plain-bf16 with the batches length-grouped as the Trainer's group_by_length
                   does (transformers' get_length_grouped_indices over the records of the run:
                   megabatches of up to 50 batches sorted by length), so each batch pads less; the
                   grouping runs before the clock starts
  hf-trainer-bf16-compile  transformers' Trainer with bf16=True, torch_compile=True on the same
                   model, batches and loss

Ours: ``python -m pretrain.train`` (the DeepSpeed engine, ZeRO-0, one process): fp32, and
``train.precision=amp-bf16`` with and without ``train.compile``; packing, masked-only
logits, the objective's own collator and ``train.cpu_heap_reuse`` are on, as in a real run.
``ours-amp-bf16-grouped`` adds the opt-in ``data.length_group=800`` with ``train.packing=false``
(length-grouped batches, padded to the longest; compare it with plain-bf16-grouped: both trade
some loss per step for less padding).
``ours-bf16-masters`` runs the ``small`` presets' own precision, ``train.precision=bf16`` (bf16
weights and activations, fp32 master weights): not the peers' autocast, so it is reported beside
the headline ``ours-amp-bf16``, not in its place.
``--peer-heap-reuse`` gives the peers the same heap setting (one process-wide switch: run the
bench once with it and once without, and take the stronger peer).

``--rounds N`` runs every runtime N times (every other round in reverse order) and reports the mean
tokens/s with each round's figure: one runtime's rate moves by up to 10 % between runs here.
Every row reports text tokens/s (padding excluded; the first ``--log-every`` window of each
run, compilation included, is left out), its ratio to the strongest peer of the same
precision, and MFU against this machine's measured matmul peak for that precision (model
FLOPs: 6 x matmul parameters x the tokens each part sees, counted once per family). A second
table per family is the one-step profile: the share of step time in data, forward, backward,
optimizer and bookkeeping (``pretrain.phases``; ours from ``train.profile_steps``).

  .venv/bin/python bench/train_bench.py [--family t5,mlm,electra,sim] [--steps 150] [--d-model 256] [--layers 4]
                                       [--corpus sample|shared|GLOBS]
``--corpus``: the documents every runtime trains on: the repository's sample corpus (default), or
``shared``: multi-sentence real documents of $ZH_SHARED_DATA (THUCNews, C3, CHID, CMRC 2018,
zhwiki; as ``bench/data_bench.py``), whose mixed lengths are what a team's corpus looks like.
Writes bench/results/train.json and prints one markdown table per family. Timings move with
machine load: run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pretrain.phases import PHASES, Phases  # noqa: E402

CONFIGS = {"t5": "t5-pegasus", "mlm": "mlm-proposal", "electra": "electra", "sim": "roformer-sim"}
MODELS = {"t5": "T5 v1.1 d_model={d} layers={n}+{n}, source 192 / target 64",
          "mlm": "BERT MLM hidden={d} layers={n}, sequence 128",
          "electra": "ELECTRA discriminator hidden={d} layers={n} + generator 1/4, sequence 128",
          "sim": "RoFormer-Sim hidden={d} layers={n}, source 64 / target 64"}


def corpus_globs(name: str) -> str:
    """``sample`` (the repository's own text), ``shared`` (real documents of the shared data folder), or globs."""
    if name == "sample":
        return "data/sample/*.jsonl"
    if name == "shared":
        sys.path.insert(0, str(REPO / "bench"))
        from data_bench import SHARED, SHARED_CORPUS
        missing = [p for p in SHARED_CORPUS if not (SHARED / p).exists()]
        if missing:
            raise SystemExit(f"--corpus shared: {SHARED / missing[0]} is missing (set ZH_SHARED_DATA)")
        return ",".join(str(SHARED / p) for p in SHARED_CORPUS)
    return name


def prepare(work: Path, corpus: str = "sample") -> list[str]:
    overrides = [f"data.clean_dir={work / 'clean'}", f"tokenizer.dir={work / 'tok'}", f"data.pairs_dir={work / 'pairs'}",
                 f"data.corpus={corpus_globs(corpus)}"]
    subprocess.run([sys.executable, "-m", "pretrain.launch", "--model", "t5-pegasus", "--prepare-only", *overrides],
                   cwd=REPO, check=True, capture_output=True)
    return overrides


def common_overrides(args) -> list[str]:
    return [f"train.steps={args.steps}", f"train.micro_batch_size={args.batch}", f"train.log_every={args.log_every}",
            "train.eval_every=100000", "train.save_every=100000", "train.eval_generate=0", "train.eval_batches=1",
            "train.seed=1", "train.warmup_steps=20", "train.zero_stage=0"]


def family_overrides(family: str, args) -> list[str]:
    """The bench model of each family, with ``--dropout`` (default 0.1, as T5's tiny preset)."""
    a = args
    dropout = [f"arch.dropout_rate={a.dropout}"]
    encoder = [f"arch.d_model={a.d_model}", f"arch.d_ff={a.d_model * 4}", f"arch.num_layers={a.layers}",
               f"arch.num_heads={a.d_model // 64}", *dropout]
    if family == "t5":
        return [f"arch.d_model={a.d_model}", f"arch.d_ff={a.d_model * 2}", f"arch.num_layers={a.layers}",
                f"arch.num_decoder_layers={a.layers}", f"arch.num_heads={a.d_model // 64}", "arch.d_kv=64",
                "train.max_source_len=192", "train.max_target_len=64", *dropout]
    if family == "sim":
        return encoder + ["train.max_source_len=64", "train.max_target_len=64"]
    return encoder + ["train.max_source_len=128"] + (["objective.sampling=uniform"] if family == "mlm" else [])


def load_objective(family: str, overrides: list[str], packing: bool = False):
    from pretrain.config import config_path, load_config

    cfg = load_config(config_path(CONFIGS[family]), [*overrides, f"train.packing={str(packing).lower()}"])
    return cfg, cfg.objective_class(cfg)


# ---------------------------------------------------------------- FLOPs per text token (one count per family)
def _layer_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if ".encoder.layer." in n or n.startswith("encoder.layer."))


def mlm_flops(mlm, tokens: int, masked: int) -> float:
    """6 x (encoder layer matmul parameters x tokens + LM-head parameters x masked tokens)."""
    head = mlm.config.hidden_size * (mlm.config.hidden_size + mlm.config.vocab_size)
    return 6.0 * (_layer_params(mlm) * tokens + head * masked)


def electra_flops(pair, tokens: int, masked: int) -> float:
    """6 x encoder matmul parameters (generator + discriminator) x tokens, + the generator's
    vocabulary head x masked tokens and the discriminator head x tokens."""
    g, d = pair.generator.config, pair.discriminator.config
    gen_head = g.hidden_size * g.embedding_size + g.embedding_size * g.vocab_size
    disc_head = d.hidden_size * d.hidden_size + d.hidden_size
    return 6.0 * (_layer_params(pair) * tokens + gen_head * masked + disc_head * tokens)


def sim_flops(sim, tokens: int, labels: int) -> float:
    """6 x (encoder layer matmul parameters x tokens + LM-head parameters x target tokens)."""
    c = sim.lm.config
    head = c.hidden_size * (c.hidden_size + c.vocab_size)
    return 6.0 * (_layer_params(sim.lm) * tokens + head * labels)


# ---------------------------------------------------------------- the peers' batches and losses
def plain_electra_loss(pair, batch: dict):
    """What users write with the Hugging Face heads: generator logits at every position
    (``labels=``), torch.multinomial sampling, the discriminator's own BCE loss."""
    import torch

    ids, am, mask = batch["input_ids"], batch["attention_mask"], batch["mlm_mask"]
    gen = pair.generator(input_ids=batch["masked_input_ids"], attention_mask=am,
                         labels=ids.masked_fill(~mask, -100))
    with torch.no_grad():
        sampled = torch.multinomial(torch.softmax(gen.logits[mask].float(), dim=-1), 1).squeeze(-1)
    fake = ids.clone()
    fake[mask] = sampled
    disc = pair.discriminator(fake, attention_mask=am, labels=(fake != ids).long())
    return gen.loss + pair.rtd_weight * disc.loss


class PeerSetup:
    """One family's model, collator and loss as a peer runs them (no packing, the model's own heads)."""

    def __init__(self, family: str, overrides: list[str], fixed_shapes: bool = False):
        import torch
        from transformers import DataCollatorForLanguageModeling

        self.family, self.fixed_shapes = family, fixed_shapes
        self.cfg, self.obj = load_objective(family, overrides, packing=False)
        torch.manual_seed(self.cfg.train.seed)
        self.model = self.obj.build_mlm() if family == "mlm" else self.obj.build_model()
        self.mlm_collator = (DataCollatorForLanguageModeling(self.obj.tokenizer, mlm_probability=0.15)
                             if family == "mlm" else None)

    def collate(self, records: list[dict]) -> tuple[dict, int, float]:
        """(batch, text tokens, model FLOPs) of a list of records; with ``fixed_shapes`` (the compiled
        peers) padded to the configured lengths, as users who compile do (nanoT5 trains on
        fixed lengths): a new shape per batch would make torch.compile recompile or go dynamic."""
        batch, n, f = self._collate(records)
        if self.fixed_shapes:
            batch = self.pad_fixed(batch)
        return batch, n, f

    def pad_fixed(self, batch: dict) -> dict:
        """Every per-token tensor padded on the right to the family's configured row width (the
        label count of ELECTRA's masked tokens and Sim's targets still varies, as in users' loops)."""
        import torch.nn.functional as F

        t, pad = self.cfg.train, self.obj.tokenizer.pad_token_id
        row = t.max_source_len + t.max_target_len + 3 if self.family == "sim" else t.max_source_len
        target = {"labels": t.max_target_len, "decoder_attention_mask": t.max_target_len,
                  "decoder_input_ids": t.max_target_len} if self.family == "t5" else {}
        per_token = {"input_ids", "attention_mask", "labels", "decoder_input_ids", "decoder_attention_mask",
                     "token_type_ids", "segment_ids", "position_ids", "masked_input_ids", "mlm_mask"}
        fill = {"input_ids": pad, "decoder_input_ids": pad, "masked_input_ids": pad,
                "labels": -100 if self.family in ("t5", "mlm") else 0}
        out = {}
        for key, v in batch.items():
            if key in per_token and getattr(v, "dim", lambda: 0)() == 2:
                v = F.pad(v, (0, target.get(key, row) - v.shape[1]), value=fill.get(key, 0))
            out[key] = v
        return out

    def _collate(self, records: list[dict]) -> tuple[dict, int, float]:
        if self.family == "mlm":
            enc = self.obj.tokenizer([r["text"] for r in records], truncation=True,
                                     max_length=self.cfg.train.max_source_len)
            batch = self.mlm_collator([{"input_ids": ids} for ids in enc["input_ids"]])
            n = int(batch["attention_mask"].sum())
            return batch, n, mlm_flops(self.model, n, int((batch["labels"] != -100).sum()))
        batch = self.obj.collate(records)
        if self.family == "t5":
            return batch, self.obj.tokens_in(batch), self.obj.train_flops(self.model, batch)
        n = int(batch["attention_mask"].sum())
        if self.family == "electra":
            return batch, n, electra_flops(self.model, n, int(batch["mlm_mask"].sum()))
        return batch, n, sim_flops(self.model, n, int(batch["labels"].numel()))

    def loss(self, model, batch: dict):
        if self.family == "electra":
            return plain_electra_loss(model, batch)
        if self.family == "sim":
            return self.obj.loss(model, batch)[0]
        return model(**batch).loss


def loss_module(setup: PeerSetup):
    """The model with the loss computation as its forward (what torch.compile and the Trainer see)."""
    import torch

    class WithLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = setup.model

        def forward(self, **batch):
            return {"loss": setup.loss(self.model, batch)}

    return WithLoss()


def record_stream(setup: PeerSetup):
    from pretrain.data import ShardStream, list_shards
    return ShardStream(list_shards(setup.obj.train_dir, "train"), 0, 1, seed=setup.cfg.train.seed)


def rate(marks: list[tuple[float, int]], log_every: int) -> float:
    """Text tokens/s after the first window: marks are (time, tokens so far) after each step."""
    i = max(min(log_every, len(marks) - 1) - 1, 0)
    (t0, n0), (t1, n1) = marks[i], marks[-1]
    return (n1 - n0) / max(t1 - t0, 1e-9)


def batch_cells(family: str, batch: dict) -> int:
    """Token cells of a batch's tensors (T5: encoder and decoder), padding included."""
    return batch["input_ids"].numel() + (batch["labels"].numel() if family == "t5" else 0)


def grouped_batches(setup: PeerSetup, steps: int):
    """The run's ``steps`` batches of records, reordered as the Trainer's ``group_by_length`` orders
    them (``get_length_grouped_indices``: random megabatches, each sorted by length, the longest
    batch first); a record's length is its model input's tokens (``input_ids``, what the Trainer
    measures: T5's source). Read and grouped before the clock starts."""
    import itertools

    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    bs = setup.cfg.train.micro_batch_size
    records = list(itertools.islice(iter(record_stream(setup)), steps * bs))
    lengths = [int(setup._collate([r])[0]["attention_mask"].sum()) for r in records]
    order = get_length_grouped_indices(lengths, bs, generator=torch.Generator().manual_seed(setup.cfg.train.seed))
    return iter([[records[i] for i in order[k:k + bs]] for k in range(0, len(order), bs)])


def plain_loop(family: str, overrides: list[str], steps: int, log_every: int, bf16: bool, compiled: bool,
               grouped: bool = False) -> dict:
    """A bare loop over the same documents: the baseline users write (bf16 autocast, compile and
    length-grouped batches optional)."""
    import torch

    from pretrain.data import batches

    setup = PeerSetup(family, overrides, fixed_shapes=compiled)
    setup.model.train()
    step_fn = loss_module(setup)
    if compiled:
        step_fn = torch.compile(step_fn)
    opt = torch.optim.AdamW(setup.model.parameters(), lr=setup.cfg.train.lr, fused=True)
    it = (grouped_batches(setup, steps) if grouped
          else batches(record_stream(setup), setup.cfg.train.micro_batch_size))
    marks, tokens, flops, cells = [], 0, [], 0
    phases = Phases(steps - log_every, skip=log_every)
    for step in range(1, steps + 1):
        phases.start()
        batch, n, f = setup.collate(next(it))
        phases.mark("data")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = step_fn(**batch)["loss"]
        phases.mark("forward")
        loss.backward()
        phases.mark("backward")
        torch.nn.utils.clip_grad_norm_(setup.model.parameters(), setup.cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        phases.mark("optimizer")
        tokens += n
        cells += batch_cells(family, batch)
        flops.append(f / n)
        marks.append((time.perf_counter(), tokens))
        phases.mark("bookkeeping")
        phases.end_step(step)
    return {"tokens_per_s": rate(marks, log_every), "final_loss": loss.item(), "flops_per_token": sum(flops) / len(flops),
            "padding_waste": 1 - tokens / cells,
            "params": sum(p.numel() for p in setup.model.parameters()), "profile": phases.report()}


def hf_trainer(family: str, overrides: list[str], steps: int, log_every: int, work: Path, bf16: bool = True) -> dict:
    """transformers' Trainer with torch_compile=True (and bf16=True, or fp32): the same model, batches and loss."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    setup = PeerSetup(family, overrides, fixed_shapes=True)
    model = loss_module(setup)
    stream = record_stream(setup)

    class Records(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(stream)

    counted = [0]

    def collate(records):
        batch, n, _ = setup.collate(records)
        counted[0] += n
        return batch

    marks = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append((time.perf_counter(), counted[0]))

    args = TrainingArguments(output_dir=str(work / f"hf-{family}"), per_device_train_batch_size=setup.cfg.train.micro_batch_size,
                             max_steps=steps, learning_rate=setup.cfg.train.lr, warmup_steps=setup.cfg.train.warmup_steps,
                             max_grad_norm=setup.cfg.train.grad_clip, bf16=bf16, torch_compile=True, use_cpu=True,
                             logging_steps=10 ** 9, save_strategy="no", report_to=[], dataloader_num_workers=0,
                             remove_unused_columns=False, disable_tqdm=True, seed=setup.cfg.train.seed,
                             # accelerate's dispatcher (its default for iterable datasets) cuts every tensor of a
                             # batch to the first tensor's row count: Sim's flat label tensors would be cut short
                             accelerator_config={"dispatch_batches": False})
    trainer = Trainer(model=model, args=args, train_dataset=Records(), data_collator=collate, callbacks=[Clock()])
    out = trainer.train()
    return {"tokens_per_s": rate(marks, log_every), "final_loss": out.training_loss, "optimizer": args.optim}


def our_padding(family: str, overrides: list[str], steps: int, compiled: bool = False) -> float:
    """Padding share of our batches over the run's steps: the trainer's data order (``TrainData``:
    length grouping where the config has it) and collator (packing where on), and for T5 with
    ``train.flatten_packed`` the packed rows laid end to end as ``T5Objective.loss`` does;
    counted apart, untimed."""
    import itertools

    from pretrain.config import config_path, load_config
    from pretrain.data import TrainData
    from pretrain.engine import cpu_attention
    from pretrain.objectives._t5 import FLAT, FLAT_FILL
    from pretrain.packing import flatten_rows
    from pretrain.stages import resolve

    cfg = resolve(load_config(config_path(CONFIGS[family]), overrides))
    obj = cfg.objective_class(cfg)
    t = cfg.train      # as the trainer decides it (pretrain.dropout.flattens_packed), from the config
    flat = (family == "t5" and t.flatten_packed and not compiled and cpu_attention(cfg) and t.relative_bias_by_offset
            and t.zero_stage != 3)
    tokens = cells = 0
    for batch, _ in itertools.islice(iter(TrainData(cfg, obj, 0, 1)), steps):
        tokens += obj.tokens_in(batch) if family == "t5" else int(batch["attention_mask"].sum())
        cells += batch_cells(family, flatten_rows(batch, FLAT, FLAT_FILL) if flat and "segment_ids" in batch else batch)
    return 1 - tokens / cells


def ours(family: str, overrides: list[str], precision: str, compiled: bool, work: Path, steps: int,
         log_every: int, name: str = "ours") -> dict:
    run_dir = work / f"run-{family}-{name}"
    cmd = [sys.executable, "-m", "pretrain.train", "--config", f"configs/{CONFIGS[family]}.yaml", f"run_dir={run_dir}",
           f"train.precision={precision}", f"train.compile={str(compiled).lower()}",
           f"train.profile_steps={steps - log_every}", *overrides]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r.get("split") != "valid"]
    # text tokens / seconds over the windows after the first (warm-up): a window's time is its
    # steps' samples / samples_per_s (a plain mean of the windows' rates would overweight the fast
    # windows of short, length-grouped batches)
    times = [(r["step"] - prev["step"]) / r["samples_per_s"] for prev, r in zip(train, train[1:])]
    data = [r["data_time_frac"] for r in train[1:]]
    return {"tokens_per_s": sum(r["tokens_per_s"] * t for r, t in zip(train[1:], times)) / sum(times),
            "final_loss": train[-1]["loss"],
            "data_time_frac": sum(data) / len(data), "padding_waste": our_padding(family, overrides, steps, compiled),
            "profile": json.loads((run_dir / "profile.json").read_text(encoding="utf-8"))}


# (name, precision group, how to run it)
PEERS = [("plain", "fp32"), ("plain-grouped", "fp32"), ("plain-compile", "fp32"), ("hf-trainer-compile", "fp32"),
         ("plain-bf16", "bf16"), ("plain-bf16-grouped", "bf16"), ("plain-bf16-compile", "bf16"),
         ("hf-trainer-bf16-compile", "bf16")]
OURS = [("ours", "fp32", "fp32", False, []), ("ours-amp-bf16", "bf16", "amp-bf16", False, []),
        ("ours-amp-bf16-compile", "bf16", "amp-bf16", True, []),
        # the small presets' precision: bf16 weights and activations, fp32 masters (pretrain.master_weights);
        # the peers' bf16 is autocast (fp32 weights, fp32 outside the matmuls), so ours-amp-bf16 is the headline
        ("ours-bf16-masters", "bf16", "bf16", False, []),
        # opt-in: length-grouped batches (data.length_group; the Trainer's megabatch of 50 x 16 records),
        # padded to the longest (packing rows of pairs alike in length pads more, as its targets fill first)
        ("ours-amp-bf16-grouped", "bf16", "amp-bf16", False, ["data.length_group=800", "train.packing=false"]),
        # ablations of amp-bf16: torch's dropout masks and attention, gelu_new's eight ops, transformers' T5 layer
        # norm, the model's own LM-head loss (T5)
        ("ours-amp-bf16-torch-dropout", "bf16", "amp-bf16", False, ["train.cpu_dropout=false"]),
        ("ours-amp-bf16-unfused-gelu", "bf16", "amp-bf16", False, ["train.fused_gelu=false"]),
        ("ours-amp-bf16-unfused-norm", "bf16", "amp-bf16", False, ["train.fused_rms_norm=false"]),
        ("ours-amp-bf16-model-loss", "bf16", "amp-bf16", False, ["train.fused_lm_loss=false"]),
        # ablation: every layer on the padded packed rows (before stop 44)
        ("ours-amp-bf16-padded-rows", "bf16", "amp-bf16", False, ["train.flatten_packed=false"])]


def table(res: dict, peaks: dict, fpt: float) -> list[str]:
    """Each row against the strongest peer of its precision; MFU against that precision's peak."""
    lines = ["| runtime | precision | tokens/s | vs strongest peer, same precision | MFU | time in data | padding | final loss |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        peers = [p for p in res.values() if p["peer"] and p["precision"] == r["precision"]]
        best = max(peers, key=lambda p: p["tokens_per_s"]) if peers else None
        r["mfu"] = fpt * r["tokens_per_s"] / peaks[r["precision"]]
        if best is None:        # --only ran no peer of this precision
            vs = "no peer run"
        else:
            r["vs_strongest_peer"], r["strongest_peer"] = r["tokens_per_s"] / best["tokens_per_s"], best["name"]
            if r["peer"]:
                vs = "strongest peer" if r is best else f"{r['vs_strongest_peer']:.2f}x"
            else:
                vs = f"**{r['vs_strongest_peer']:.2f}x** (vs {best['name']})"
        data = f"{100 * r['data_time_frac']:.1f}%" if "data_time_frac" in r else "-"
        pad = f"{100 * r['padding_waste']:.1f}%" if "padding_waste" in r else "-"
        rounds = r.get("tokens_per_s_rounds", [])
        rate = f"{r['tokens_per_s']:.0f}" + (f" ({', '.join(f'{x:.0f}' for x in rounds)})" if len(rounds) > 1 else "")
        lines.append(f"| {name} | {r['precision']} | {rate} | {vs} | {100 * r['mfu']:.1f}% | {data} "
                     f"| {pad} | {r['final_loss']:.3f} |")
    return lines


def profile_table(res: dict) -> list[str]:
    """Phase shares of one step per runtime (``pretrain.phases``; the HF Trainer is not instrumented)."""
    rows = [(name, r["profile"]) for name, r in res.items() if r.get("profile")]
    lines = ["| runtime | " + " | ".join(PHASES) + " | step (ms) |", "|---|" + "---|" * (len(PHASES) + 1)]
    for name, prof in rows:
        shares = " | ".join(f"{100 * prof['share'][k]:.1f}%" for k in PHASES)
        lines.append(f"| {name} | {shares} | {1000 * prof['seconds_per_step']:.0f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="t5,mlm,electra,sim", help="comma list of t5, mlm, electra, sim")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--corpus", default="sample",
                    help="sample (the repository's text), shared (real documents of $ZH_SHARED_DATA), or globs")
    ap.add_argument("--dropout", type=float, default=0.1,
                    help="every model's dropout rate, peers and ours (default 0.1; the T5 small/base presets train with 0)")
    ap.add_argument("--ours-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for our runtime only (an ablation, e.g. data.length_group=0); repeatable")
    ap.add_argument("--only", default="", help="comma list of runtime names to run (default: all)")
    ap.add_argument("--peer-heap-reuse", action="store_true",
                    help="give the peers (this process) what train.cpu_heap_reuse gives ours: freed memory reused, "
                         "not mapped afresh (pretrain.engine.reuse_freed_memory)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every runtime this many times, every other round in reverse order, and report "
                         "the mean tokens/s (a runtime's rate moves by up to 10 %% between runs on a shared host)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "train.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    if args.peer_heap_reuse:
        from pretrain.engine import reuse_freed_memory
        if not reuse_freed_memory():
            ap.error("--peer-heap-reuse needs glibc (Linux)")
    families = [f for f in args.family.split(",") if f]
    only = set(filter(None, args.only.split(",")))
    from pretrain.train import matmul_peak_flops
    peaks = {"fp32": matmul_peak_flops("float32", 2048, 10), "bf16": matmul_peak_flops("bfloat16", 2048, 10)}
    out = {"cpu_count": os.cpu_count(), "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
           "steps": args.steps, "rounds": args.rounds, "batch": args.batch, "corpus": args.corpus, "ours_set": args.ours_set,
           "dropout": args.dropout,
           "peer_heap_reuse": args.peer_heap_reuse,
           "load_avg_start": os.getloadavg(), "families": {}}
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare(work, args.corpus)
        for family in families:
            overrides = data + common_overrides(args) + family_overrides(family, args)
            res, fpt, params, runs = {}, None, None, {}
            jobs = [("peer", name, precision) for name, precision in PEERS] + [("ours", *o) for o in OURS]
            for rnd in range(args.rounds):
                # later rounds run the list backwards: a drift of the host over the run does not favour one side
                for job in (jobs if rnd % 2 == 0 else jobs[::-1]):
                    name = job[1]
                    if only and name not in only and not (job[0] == "peer" and fpt is None):
                        continue
                    if job[0] == "peer":
                        precision = job[2]
                        if name.startswith("hf-trainer"):
                            r = hf_trainer(family, overrides, args.steps, args.log_every, work, bf16=precision == "bf16")
                        else:
                            r = plain_loop(family, overrides, args.steps, args.log_every, bf16=precision == "bf16",
                                           compiled="compile" in name, grouped="grouped" in name)
                            fpt, params = fpt or r["flops_per_token"], params or r["params"]
                        r = {**r, "name": name, "precision": precision, "peer": True}
                    else:
                        _, _, group, precision, compiled, extra = job
                        r = {**ours(family, overrides + extra + args.ours_set, precision, compiled, work, args.steps,
                                    args.log_every, f"{name}-{rnd}"),
                             "name": name, "precision": group, "peer": False}
                    runs.setdefault(name, []).append(r)
            for name, rs in runs.items():      # each runtime: the mean rate of its rounds (each round listed)
                rates = [r["tokens_per_s"] for r in rs]
                res[name] = {**rs[0], "tokens_per_s": sum(rates) / len(rates), "tokens_per_s_rounds": rates}
            res = {name: res[name] for name in [j[1] for j in jobs] if name in res}
            model = MODELS[family].format(d=args.d_model, n=args.layers)
            lines += ["", f"{family}: {model}, {params / 1e6:.1f}M parameters, batch {args.batch} records, "
                          f"{args.steps} steps, {args.corpus} corpus", ""] + table(res, peaks, fpt)
            lines += ["", f"{family}: where a step's time goes (share of step time; data = read + collate + "
                          f"to tensors)", ""] + profile_table(res)
            out["families"][family] = {"model": model, "params": params, "flops_per_token": fpt, "results": res}
            print("\n".join(lines[-2 * len(res) - 8:]), flush=True)
            out["load_avg_end"] = os.getloadavg()
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(out, indent=1))   # after each family: a later failure keeps it
    print(f"\nfp32 matmul peak {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s; "
          f"load {out['load_avg_start'][0]:.1f} at start, {out['load_avg_end'][0]:.1f} at end")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
