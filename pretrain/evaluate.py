"""Downstream evaluation of an exported model: one JSON object on stdout.

  python -m pretrain.evaluate --model DIR --task sts|summarization|mlm --data PATH [options]

Each task lives in ``pretrain/evaluation/<task>.py`` as ``run(model_dir, data, **options) -> dict``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

TASKS = ("sts", "summarization", "mlm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="exported Hugging Face folder")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--data", default=None, help="dataset file or folder (task-specific default if omitted)")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="task option, e.g. -o steps=200 -o max_examples=500")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    try:
        module = importlib.import_module(f"pretrain.evaluation.{args.task}")
    except ModuleNotFoundError as exc:
        if exc.name == f"pretrain.evaluation.{args.task}":
            print(f"error: task '{args.task}' is not implemented yet", file=sys.stderr)
            return 2
        raise
    try:
        result = module.run(args.model, args.data, **options)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
