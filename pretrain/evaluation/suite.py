"""`make eval`: a run's default downstream suite, pretrained vs its scratch twin, over seeds.

  python -m pretrain.evaluate --run RUN [--suite default|TASK,TASK] [--model-name MODEL] [--seeds 0,1,2]
      [--data SHARED_DATA_DIR] [-o steps=300 -o max_train=2000 ...]

For every task of the suite and every seed, ``RUN/export`` and its scratch twin (same config,
vocabulary and recipe, random init) are fine-tuned by ``pretrain.evaluation.finetune`` and
scored on the task's test role (the same capped test rows for every run). ``RUN/eval/<task>.json``
gets each run's result, the mean and sample standard deviation over seeds, and a paired
bootstrap (1,000 resamples of the test rows) of pretrained - scratch; a table is printed.

The default suites (``SUITES``, keyed by the run's model) are sized for a tiny model on 2
CPU cores: about a minute per fine-tune. For a real model raise the budget, e.g.
``-o steps=3000 -o max_train=0 -o max_test=0 -o lr=3e-4`` (all rows, published-style lr).
"""
from __future__ import annotations

import json
import logging
import os
import statistics
from pathlib import Path

from pretrain.evaluation import finetune, scoring
from pretrain.evaluation.tasks import get_task

log = logging.getLogger("pretrain.evaluate")
SEEDS = (0, 1, 2)
BOOTSTRAP = 1000


def run_model_name(run_dir: Path, given: str | None) -> str:
    """The run's model (run.json, written by the trainer); a different MODEL= is an error."""
    recorded = None
    path = run_dir / "run.json"
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8")).get("model")
    if given and recorded and given != recorded:
        raise ValueError(f"{path}: this run is model '{recorded}', not '{given}'")
    name = given or recorded
    if not name:
        raise ValueError(f"{run_dir}: no run.json naming the model; pass MODEL=")
    return name


def default_suite(model: str) -> tuple[str, ...]:
    """The fine-tuning tasks the model's objective declares (``ObjectiveSpec.finetune_suite``)."""
    from pretrain.config import ConfigError, config_path, load_config

    try:
        spec = load_config(config_path(model)).objective_class.spec
    except ConfigError as exc:
        raise ValueError(f"model '{model}': {exc}") from None
    if not spec.finetune_suite:
        raise ValueError(f"model '{model}' (objective {spec.name}) declares no fine-tuning suite; name tasks with --suite")
    return spec.finetune_suite


def suite_tasks(model: str, suite: str) -> tuple[str, ...]:
    if suite == "default":
        return default_suite(model)
    tasks = tuple(t.strip() for t in suite.split(",") if t.strip())
    for t in tasks:
        get_task(t)
    return tasks


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seeds": values}


def difference(a: list[dict], b: list[dict]) -> dict:
    """Paired bootstrap (percent points) of runs a - runs b on their shared test rows."""
    return scoring.paired_bootstrap([r["per_example"] for r in a], [r["per_example"] for r in b], BOOTSTRAP,
                                    seed=0, scale=100)


def summarize(task: str, runs: dict[str, list[dict]]) -> dict:
    """Mean/spread per init over seeds and the paired bootstrap of pretrained - scratch (percent points)."""
    metric = runs["pretrained"][0]["metric"]
    out = {"task": task, "metric": metric, "n": runs["pretrained"][0]["n"], "chance": runs["pretrained"][0]["chance"],
           "recipe": runs["pretrained"][0]["recipe"], "params": runs["pretrained"][0]["params"]}
    for init, results in runs.items():
        out[init] = {"test": spread([r["test"][metric] for r in results]),
                     "dev": spread([r["dev"][metric] for r in results]) if "dev" in results[0] else None,
                     "test_metrics": {m: spread([r["test"][m] for r in results]) for m in results[0]["test"]}}
    out["difference"] = difference(runs["pretrained"], runs["scratch"])
    out["runs"] = [{k: v for k, v in r.items() if k != "per_example"} for rs in runs.values() for r in rs]
    return out


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def table(summaries: list[dict]) -> str:
    """Markdown: tasks x (pretrained, scratch, difference with its 95% paired bootstrap interval)."""
    lines = ["| task | metric (test) | n | pretrained mean ± sd | scratch mean ± sd | difference [95% CI] |",
             "|---|---|---:|---:|---:|---:|"]
    for s in summaries:
        p, r, d = s["pretrained"]["test"], s["scratch"]["test"], s["difference"]
        lines.append(f"| {s['task']} | {s['metric']} | {s['n']['test']} | {p['mean']:.2f} ± {p['std']:.2f} | "
                     f"{r['mean']:.2f} ± {r['std']:.2f} | {d['delta']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] |")
    return "\n".join(lines)


def run_suite(run_dir: str | Path, model_name: str | None = None, suite: str = "default",
              seeds: tuple[int, ...] = SEEDS, data: str | None = None, **options) -> list[dict]:
    run_dir = Path(run_dir)
    export = run_dir / "export"
    if not (export / "config.json").is_file():
        raise FileNotFoundError(f"{export}: no exported model (run `make pretrain` first)")
    model = run_model_name(run_dir, model_name)
    summaries = []
    for task in suite_tasks(model, suite):
        runs = {init: [finetune.run(str(export), data, task=task, init=init, seed=seed, per_example=True, **options)
                       for seed in seeds] for init in ("pretrained", "scratch")}
        summary = {"model": model, "export": str(export), **summarize(task, runs)}
        write_json(run_dir / "eval" / f"{task}.json", summary)
        log.info("%s: pretrained %.2f, scratch %.2f, difference %+.2f", task, summary["pretrained"]["test"]["mean"],
                 summary["scratch"]["test"]["mean"], summary["difference"]["delta"])
        summaries.append(summary)
    return summaries
