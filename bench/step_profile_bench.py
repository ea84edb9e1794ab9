"""One training step, operator by operator: the strongest bf16 peer against ours, same documents.

``bench/train_bench.py`` splits a step into phases (data, forward, backward, optimizer). This
script splits it by operator, with torch's profiler, for the length-grouped bf16 loop
(``plain-bf16-grouped``, the strongest peer on real documents) and ours in amp-bf16 (the
``ours-amp-bf16`` row), on the train bench's model of the family. Every figure is milliseconds
per 1,000 text tokens (padding excluded), since the two runtimes put different numbers of
tokens in a step. The last rows say what is left to win: ours' matmuls alone against the
peer's whole step is the ratio ours would reach if everything else cost nothing.

    .venv/bin/python bench/step_profile_bench.py --corpus shared     # T5, real documents (ZH_SHARED_DATA)
    .venv/bin/python bench/step_profile_bench.py --family mlm        # the sample corpus
    .venv/bin/python bench/step_profile_bench.py --corpus shared --precision fp32   # plain-grouped vs ours in fp32

``--precision fp32`` profiles the fp32 forms of both (for a CPU whose bf16 matmuls are slower
than fp32) and writes ``..._fp32.json``.

Each runtime runs in its own process: ``--warm`` steps, then ``--steps`` timed without the
profiler (the step's real time), then the same number again under the profiler (the split).
Writes ``bench/results/step_profile_<family>_<corpus>.json``.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

# operator -> category; anything else is "other operators"
CATEGORIES = {
    "matmuls": {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"},
    "softmax, log-softmax, exp": {"aten::_softmax", "aten::_softmax_backward_data", "aten::_log_softmax",
                                  "aten::_log_softmax_backward_data", "aten::exp", "aten::exp_", "aten::logsumexp"},
    "dropout masks": {"aten::bernoulli_", "aten::randint", "aten::random_", "aten::uniform_"},
    "copies and dtype casts": {"aten::copy_", "aten::clone"},
    "fills (zeros)": {"aten::fill_", "aten::zero_"},
    "optimizer and clipping": {"aten::_fused_adamw_", "aten::_foreach_norm", "aten::linalg_vector_norm",
                               "aten::_foreach_mul_"},
}


# --precision -> (the peer's train_bench name, ours' name, ours' train.precision)
SIDES = {"bf16": ("plain-bf16-grouped", "ours-amp-bf16", "amp-bf16"), "fp32": ("plain-grouped", "ours", "fp32")}


def run_one(who: str, family: str, corpus: str, warm: int, steps: int, work: Path, precision: str = "bf16") -> dict:
    """In this process: ``warm`` steps, ``steps`` timed, ``steps`` profiled."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import train_bench as tb
    from pretrain.engine import reuse_freed_memory

    torch.set_num_threads(os.cpu_count() or 1)
    torch.set_flush_denormal(True)
    reuse_freed_memory()                     # both runtimes (train_bench --peer-heap-reuse)
    args = argparse.Namespace(steps=warm + 2 * steps, batch=16, log_every=10, d_model=256, layers=4, dropout=0.1)
    overrides = json.loads((work / "overrides.json").read_text()) + tb.common_overrides(args) + \
        tb.family_overrides(family, args)
    torch.manual_seed(1)
    if who == "peer":
        setup = tb.PeerSetup(family, overrides)
        setup.model.train()
        opt = torch.optim.AdamW(setup.model.parameters(), lr=setup.cfg.train.lr, fused=True)
        it = tb.grouped_batches(setup, warm + 2 * steps)

        def step() -> int:
            batch, n, _ = setup.collate(next(it))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = setup.loss(setup.model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(setup.model.parameters(), setup.cfg.train.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return n
    else:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("STEP_PROFILE_PORT", "29641"),
                          RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        from pretrain.config import config_path, load_config
        from pretrain.data import TrainData
        from pretrain.engine import build_engine, init_distributed
        from pretrain.stages import resolve
        from pretrain.train import clip_and_norm

        init_distributed()
        cfg = resolve(load_config(config_path(tb.CONFIGS[family]), [*overrides, f"train.precision={SIDES[precision][2]}"]))
        obj = cfg.objective_class(cfg)
        engine, _, _ = build_engine(cfg, obj.initial_model())    # as pretrain.train starts a run
        data = iter(TrainData(cfg, obj, 0, 1))

        def step() -> int:                   # as pretrain.train's loop: loss read, norm, clip, step
            batch, _ = next(data)
            loss, _ = obj.loss(engine, batch)
            loss.detach().float().item()
            engine.backward(loss)
            clip_and_norm(engine, 1, cfg.train.grad_clip)
            engine.step()
            return obj.tokens_in(batch) if family == "t5" else int(batch["attention_mask"].sum())

    for _ in range(warm):
        step()
    t0, tokens = time.perf_counter(), 0
    for _ in range(steps):
        tokens += step()
    wall = time.perf_counter() - t0
    ptokens = 0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            ptokens += step()
        profiled_wall = time.perf_counter() - t0
    ops = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}   # ms over the profiled steps
    return {"who": who, "steps": steps, "wall_ms": wall * 1e3, "text_tokens": tokens,
            "profiled_wall_ms": profiled_wall * 1e3, "profiled_tokens": ptokens,
            "ops_ms": ops, "top": sorted(ops.items(), key=lambda kv: -kv[1])[:15]}


def per_ktok(res: dict) -> dict:
    """Milliseconds per 1,000 text tokens by category. 'outside operators' is the profiled steps' wall
    time that no operator accounts for (Python, the autograd engine, dispatch, numpy). The profiler
    slows every operator, so the split is taken under it and scaled to the step's time without it."""
    k = res["profiled_tokens"] / 1e3
    cats = {name: sum(ms for op, ms in res["ops_ms"].items() if op in ops) / k for name, ops in CATEGORIES.items()}
    known = set().union(*CATEGORIES.values())
    cats["other operators"] = sum(ms for op, ms in res["ops_ms"].items() if op not in known) / k
    cats["outside operators"] = max(res["profiled_wall_ms"] / k - sum(cats.values()), 0.0)
    step = res["wall_ms"] / (res["text_tokens"] / 1e3)
    scale = step / (res["profiled_wall_ms"] / k)
    return {**{name: ms * scale for name, ms in cats.items()}, "step (no profiler)": step}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="t5", choices=["t5", "mlm", "electra", "sim"])
    ap.add_argument("--corpus", default="sample", help="sample (default) or shared (real documents, ZH_SHARED_DATA)")
    ap.add_argument("--warm", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--precision", default="bf16", choices=list(SIDES),
                    help="bf16 (default): the grouped loop under bf16 autocast against ours in amp-bf16; fp32: both in fp32 "
                         "(for CPUs whose bf16 matmuls are slower than fp32)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", choices=["peer", "ours"], help=argparse.SUPPRESS)   # internal: one runtime
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.one:
        print(json.dumps(run_one(a.one, a.family, a.corpus, a.warm, a.steps, Path(a.work), a.precision)))
        return 0
    import train_bench as tb
    tag = "" if a.precision == "bf16" else f"_{a.precision}"
    out = Path(a.out or REPO / "bench" / "results" / f"step_profile_{a.family}_{a.corpus}{tag}.json")
    with tempfile.TemporaryDirectory(prefix="step-profile-") as tmp:
        work = Path(tmp)
        print(f"preparing the {a.corpus} corpus (clean, tokenizer, pairs) ...", flush=True)
        (work / "overrides.json").write_text(json.dumps(tb.prepare(work, a.corpus)))
        results = {}
        for who in ("peer", "ours"):
            print(f"{who}: {a.warm} + {a.steps} steps, then {a.steps} under the profiler ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--one", who, "--family", a.family, "--corpus", a.corpus,
                                   "--warm", str(a.warm), "--steps", str(a.steps), "--work", str(work),
                                   "--precision", a.precision],
                                  cwd=REPO, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"step_profile: the {who} run failed:\n{proc.stderr[-3000:]}")
            results[who] = json.loads(proc.stdout.strip().splitlines()[-1])
    peer, ours = per_ktok(results["peer"]), per_ktok(results["ours"])
    lines = [f"{a.family}, {a.corpus} corpus, {a.precision}: ms per 1,000 text tokens", "",
             f"| | {SIDES[a.precision][0]} (peer) | {SIDES[a.precision][1]} | peer / ours |", "|---|---:|---:|---:|"]
    for name in peer:
        ratio = f"{peer[name] / ours[name]:.2f}x" if min(peer[name], ours[name]) >= 0.5 else "-"
        lines.append(f"| {name} | {peer[name]:.1f} | {ours[name]:.1f} | {ratio} |")
    ceiling = peer["step (no profiler)"] / ours["matmuls"]
    lines += ["", "(ours draws its dropout masks with numpy: they count under 'outside operators')",
              "", f"ours / peer, tokens/s: {peer['step (no profiler)'] / ours['step (no profiler)']:.2f}x; "
              f"if everything but ours' matmuls cost nothing: {ceiling:.2f}x"]
    print("\n".join(lines))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"family": a.family, "corpus": a.corpus, "precision": a.precision, "warm": a.warm, "steps": a.steps,
                               "ms_per_1k_text_tokens": {"peer": peer, "ours": ours}, "ceiling_ratio": ceiling,
                               "runs": results}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
