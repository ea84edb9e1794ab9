"""Downstream evaluation of an exported model.

  python -m pretrain.evaluate --model DIR --task TASK [--data PATH] [-o key=value ...]   # one JSON object on stdout
  python -m pretrain.evaluate --run RUN [--suite default|TASK,...] [--model-name MODEL] [--seeds 0,1,2] [-o ...]
                                                                      # `make eval`: RUN/eval/<task>.json + a table

Tasks: sts, summarization, mlm (``pretrain/evaluation/<task>.py``, each ``run(model_dir, data,
**options) -> dict``) and the fine-tuning tasks of ``pretrain/evaluation/tasks.py``
(thucnews_titles, iflytek, chnsenticorp, waimai, weibo, lcqmc, bq, cmrc2018, c3), all run by
``pretrain/evaluation/finetune.py``. ``--run`` runs the run's default suite with scratch twins
(``pretrain/evaluation/suite.py``).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import sys

from pretrain.evaluation.tasks import TASKS as FINETUNE_TASKS

TASKS = ("sts", "summarization", "mlm", *FINETUNE_TASKS)


def parse_options(items: list[str]) -> dict:
    options = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def run_task(args, options: dict) -> dict:
    name = "finetune" if args.task in FINETUNE_TASKS else args.task
    if name == "finetune":
        options["task"] = args.task
    try:
        module = importlib.import_module(f"pretrain.evaluation.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"pretrain.evaluation.{name}":
            raise ValueError(f"task '{args.task}' is not implemented yet") from None
        raise
    return module.run(args.model, args.data, **options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="exported Hugging Face folder (with --task)")
    parser.add_argument("--task", choices=TASKS)
    parser.add_argument("--run", help="run directory: fine-tune RUN/export on its suite, write RUN/eval/")
    parser.add_argument("--suite", default="default", help="with --run: 'default' or a comma-separated task list")
    parser.add_argument("--model-name", default="", help="with --run: the model (default: RUN/run.json)")
    parser.add_argument("--seeds", default="0,1,2", help="with --run: fine-tuning seeds")
    parser.add_argument("--data", default=None, help="dataset file or folder (task-specific default if omitted)")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="task option, e.g. -o steps=200 -o max_examples=500")
    args = parser.parse_args(argv)
    if (args.run and (args.model or args.task)) or (not args.run and not (args.model and args.task)):
        parser.error("give either --model DIR --task TASK, or --run RUN")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    options = parse_options(args.option)
    try:
        # Libraries (DeepSpeed's import, the Trainer's log lines) print to stdout: keep it for the result.
        with contextlib.redirect_stdout(sys.stderr):
            if args.run:
                from pretrain.evaluation import suite
                seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
                result = suite.run_suite(args.run, args.model_name or None, args.suite, seeds, args.data, **options)
            else:
                result = run_task(args, options)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TypeError as exc:          # an unknown -o option
        if "keyword argument" not in str(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(suite.table(result) if args.run else json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
