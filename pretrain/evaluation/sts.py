"""Chinese semantic textual similarity: Spearman correlation of cosine similarity with the gold labels.

  python -m pretrain.evaluate --task sts --model runs/roformer-sim/export \
      [--data /work/shared/data/sts/senteval_cn] [-o baseline=true] [-o max_examples=2000]

Protocol of SimBERT / RoFormer-Sim / CoSENT / SimCSE on "senteval_cn": each task
folder holds ``<TASK>.test.data`` (TSV ``sent1\\tsent2\\tlabel``); the sentence
vector is the encoder's output for ``[CLS] sent [SEP]``, pooled as the model was
trained (``sentence_pooling`` in its config: mean over tokens, the ``[CLS]``
state, or first-last-avg); the score is Spearman's rho between cos(u, v) and the label over the
whole test file. Test files are read here only: nothing is trained or tuned on them.

Options: ``baseline=true`` also scores a randomly initialized model of the same
config (seeded; same architecture, vocabulary and pooling); ``baseline_seeds=K`` scores K random
inits (seeds ``seed`` .. ``seed``+K-1) and reports each, their range and mean, and each paired
bootstrap, because the init's own seed moves a tiny model's Spearman by about 0.01-0.02 (LCQMC
0.484-0.497 over three seeds): one init can make a tie look like a win; ``bootstrap=N`` (with
the baseline: a paired bootstrap over rows, N resamples, of the Spearman difference
pretrained - random: 95% interval and the share of resamples where it is <= 0), ``pooling=mean|cls|first-last-avg``
(override the config's, for both), ``split=test|valid``, ``max_examples`` (first
N rows per task, 0 = all), ``generate`` (how many built-in sentences to paraphrase
with the UniLM decoder, 0 = none), ``num_samples``, ``seed``, ``batch_size``, ``max_len``.

Beside each Spearman the result gives ``length_control``: the partial Spearman of cosine and
label with the pair's length (the shorter sentence's token count) held fixed, and the Spearman of
cosine with that length. Why: a random init's mean-pooled vectors share a common component that
longer sentences average towards, so its cosine rises with length (Spearman +0.20 on LCQMC valid,
+0.45 on STS-B, +0.55 on BQ), and on LCQMC's valid file the label follows length too (+0.24;
test +0.06). Part of a random init's score is that artefact, not similarity; the plain Spearman
stays the protocol's figure.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

TASKS = ("ATEC", "BQ", "LCQMC", "PAWSX", "STS-B")
# Inputs for the generation sample (written for this project; not from any eval set).
PROMPTS = ("微信支付怎么绑定银行卡？", "今天的天气怎么样", "这家店的外卖送得很快，味道也不错。",
           "如何提高英语口语水平", "我的信用卡额度可以提升吗")


def default_data() -> Path:
    return Path(os.environ.get("ZH_SHARED_DATA", "/work/shared/data")) / "sts" / "senteval_cn"


def rank(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties get their average rank (as scipy.stats.rankdata), vectorized."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]            # start of each run of equal values
    group = np.cumsum(first) - 1                       # run index of each sorted position
    bounds = np.r_[np.flatnonzero(first), len(x)]      # run g spans sorted positions [bounds[g], bounds[g+1])
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = (bounds[group] + bounds[group + 1] + 1) / 2.0
    return ranks


def spearman(x, y) -> float:
    rx, ry = rank(np.asarray(x, dtype=np.float64)), rank(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0


def read_task(folder: Path, task: str, split: str, max_examples: int) -> tuple[list[str], list[str], list[float]]:
    path = folder / task / f"{task}.{split}.data"
    a, b, labels = [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 3:
                continue
            try:
                label = float(cols[2])
            except ValueError:
                continue
            a.append(cols[0])
            b.append(cols[1])
            labels.append(label)
            if max_examples and len(labels) >= max_examples:
                break
    return a, b, labels


def cosines(model, tokenizer, tasks: dict, batch_size: int, max_len: int) -> dict[str, np.ndarray]:
    from pretrain.objectives.roformer_sim import encode

    out = {}
    for task, (a, b, _) in tasks.items():
        u = torch.nn.functional.normalize(encode(model, tokenizer, a, batch_size, max_len), dim=-1)
        v = torch.nn.functional.normalize(encode(model, tokenizer, b, batch_size, max_len), dim=-1)
        out[task] = (u * v).sum(-1).numpy()
    return out


def _partial(rxy: float, rxz: float, ryz: float) -> float:
    denom = np.sqrt(max(0.0, (1 - rxz ** 2) * (1 - ryz ** 2)))
    return float((rxy - rxz * ryz) / denom) if denom > 0 else 0.0


def partial_spearman(x, y, z) -> float:
    """Spearman of x and y with z held fixed (partial correlation of the ranks)."""
    return _partial(spearman(x, y), spearman(x, z), spearman(y, z))


def pair_lengths(tokenizer, tasks: dict) -> dict[str, np.ndarray]:
    """Each pair's length: the shorter sentence's token count."""
    return {t: np.array([min(len(tokenizer.tokenize(x)), len(tokenizer.tokenize(z))) for x, z in zip(a, b)],
                        dtype=np.float64) for t, (a, b, _) in tasks.items()}


def length_control(cos: dict, tasks: dict, lengths: dict) -> dict:
    return {"spearman": {t: round(partial_spearman(cos[t], tasks[t][2], lengths[t]), 4) for t in tasks},
            "cosine_vs_length": {t: round(spearman(cos[t], lengths[t]), 4) for t in tasks}}


def paired_bootstrap(cos_a: np.ndarray, cos_b: np.ndarray, labels, resamples: int, seed: int,
                     lengths: np.ndarray | None = None) -> dict:
    """Spearman(a) - Spearman(b) over rows resampled with replacement: 95% interval and the share <= 0.

    Both models are scored on the same resampled rows, so the interval is about their
    difference on this kind of data, not about either score alone. With ``lengths``, the same
    resamples also give the interval of the length-controlled difference (``partial_spearman``).
    """
    y = np.asarray(labels, dtype=np.float64)
    rng = np.random.default_rng(seed)
    deltas, controlled = [], []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        ra, rb = spearman(cos_a[idx], y[idx]), spearman(cos_b[idx], y[idx])
        deltas.append(ra - rb)
        if lengths is not None:      # each Spearman once: the label-length one serves both models
            ryz = spearman(y[idx], lengths[idx])
            controlled.append(_partial(ra, spearman(cos_a[idx], lengths[idx]), ryz)
                              - _partial(rb, spearman(cos_b[idx], lengths[idx]), ryz))
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    out = {"delta": round(spearman(cos_a, y) - spearman(cos_b, y), 4), "ci95": [round(lo, 4), round(hi, 4)],
           "share_not_better": round(float(np.mean(np.asarray(deltas) <= 0)), 4), "resamples": resamples}
    if lengths is not None:
        lo, hi = np.percentile(controlled, [2.5, 97.5])
        out["length_control"] = {
            "delta": round(partial_spearman(cos_a, y, lengths) - partial_spearman(cos_b, y, lengths), 4),
            "ci95": [round(lo, 4), round(hi, 4)]}
    return out


def _verdict(intervals: list[list[float]]) -> str:
    """``above`` when every init's 95 % interval of (pretrained - init) is above 0, ``below`` when
    every one is below 0, else ``tie``."""
    if all(lo > 0 for lo, _ in intervals):
        return "above"
    if all(hi < 0 for _, hi in intervals):
        return "below"
    return "tie"


def run(model_dir: str, data: str | None = None, baseline: bool = False, split: str = "test",
        max_examples: int = 0, generate: int = 3, num_samples: int = 8, seed: int = 0,
        batch_size: int = 128, max_len: int = 64, pooling: str = "", bootstrap: int = 0,
        baseline_seeds: int = 1) -> dict:
    from transformers import AutoModelForCausalLM

    from tokenizer.loading import load_any_tokenizer
    from transformers.utils import logging as hf_logging

    from pretrain.objectives.roformer_sim import POOLINGS, generate_similar

    folder = Path(data) if data else default_data()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: STS data folder not found (pass --data)")
    tasks = {t: read_task(folder, t, split, int(max_examples)) for t in TASKS
             if (folder / t / f"{t}.{split}.data").is_file()}
    if not tasks:
        raise FileNotFoundError(f"{folder}: no <TASK>/<TASK>.{split}.data file for any of {', '.join(TASKS)}")
    torch.set_grad_enabled(False)
    hf_logging.set_verbosity_error()
    tokenizer = load_any_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    if pooling:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got '{pooling}'")
        model.config.sentence_pooling = pooling
    result = {"task": "sts", "model": str(model_dir), "split": split,
              "pooling": getattr(model.config, "sentence_pooling", "cls"),
              "examples": {t: len(v[2]) for t, v in tasks.items()}}
    cos = cosines(model, tokenizer, tasks, batch_size, max_len)
    result["spearman"] = {t: round(spearman(cos[t], tasks[t][2]), 4) for t in tasks}
    lengths = pair_lengths(tokenizer, tasks)
    result["label_vs_length"] = {t: round(spearman(tasks[t][2], lengths[t]), 4) for t in tasks}
    result["length_control"] = length_control(cos, tasks, lengths)
    if baseline or int(baseline_seeds) > 1:
        if int(baseline_seeds) < 1:
            raise ValueError(f"baseline_seeds must be >= 1, got {baseline_seeds}")
        runs = []
        for s in range(int(seed), int(seed) + int(baseline_seeds)):
            torch.manual_seed(s)
            random_model = AutoModelForCausalLM.from_config(model.config).eval()
            cos_random = cosines(random_model, tokenizer, tasks, batch_size, max_len)
            run_ = {"seed": s, "spearman": {t: round(spearman(cos_random[t], tasks[t][2]), 4) for t in tasks},
                    "length_control": length_control(cos_random, tasks, lengths)}
            if int(bootstrap):
                run_["bootstrap"] = {t: paired_bootstrap(cos[t], cos_random[t], tasks[t][2], int(bootstrap), seed,
                                                     lengths[t])
                                     for t in tasks}
            runs.append(run_)
        # the first init's figures at the top level (as with one seed); the others beside them
        result["baseline"] = {"init": "random", **runs[0]}
        if len(runs) > 1:
            result["baseline"]["seeds"] = runs
            result["baseline"]["range"] = {t: [min(r["spearman"][t] for r in runs), max(r["spearman"][t] for r in runs)]
                                           for t in tasks}
            result["baseline"]["mean"] = {t: round(sum(r["spearman"][t] for r in runs) / len(runs), 4) for t in tasks}
            # above every init, below every init, or a tie with at least one (95 % intervals, with bootstrap)
            if int(bootstrap):
                result["baseline"]["verdict"] = {t: _verdict([r["bootstrap"][t]["ci95"] for r in runs]) for t in tasks}
                result["baseline"]["verdict_length_control"] = {
                    t: _verdict([r["bootstrap"][t]["length_control"]["ci95"] for r in runs]) for t in tasks}
    result["generated"] = [
        {"input": text, "outputs": generate_similar(model, tokenizer, text, n=int(num_samples), k=3, seed=seed)}
        for text in PROMPTS[:int(generate)]]
    return result
