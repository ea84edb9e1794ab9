"""``python -m pretrain.release``: see the package docstring."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pretrain.checkpoint import CheckpointError
from pretrain.config import ConfigError
from pretrain.release import ReleaseError, release, verify_release


def main(argv: list[str] | None = None) -> int:
    import pretrain.release as pkg

    parser = argparse.ArgumentParser(prog="python -m pretrain.release", description=pkg.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="", help="run directory (default runs/MODEL)")
    parser.add_argument("--model", default="", help="expected model name (checked against RUN/config.yaml)")
    parser.add_argument("--out", default="", help="release folder (default RUN/release)")
    parser.add_argument("--verify", default="", metavar="DIR", help="check a release folder's sha256 sums and exit")
    parser.add_argument("--skip-eval", action="store_true", help="do not run the downstream evaluation")
    parser.add_argument("--eval-data", default=None, help="--data for python -m pretrain.evaluate")
    parser.add_argument("--eval-option", action="append", default=[], metavar="KEY=VALUE",
                        help="-o option for python -m pretrain.evaluate (repeatable)")
    parser.add_argument("--eval-timeout", type=int, default=3600, help="seconds per evaluation task")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if args.verify:
        problems = verify_release(args.verify)
        for p in problems:
            print(f"error: {Path(args.verify) / p}", file=sys.stderr)
        if not problems:
            print(f"{args.verify}: every file matches its recorded sha256")
        return 1 if problems else 0
    if not args.run and not args.model:
        print("error: RUN or MODEL is required, e.g. make release MODEL=t5-pegasus", file=sys.stderr)
        return 2
    run_dir = args.run or f"runs/{args.model}"
    try:
        result = release(run_dir, args.model or None, args.out or None, args.skip_eval, args.eval_data,
                         args.eval_option, args.eval_timeout)
    except (ReleaseError, ConfigError, CheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, info in result["folders"].items():
        print(f"{Path(result['out']) / name}: {info['architecture']} via {info['auto_class']}, "
              f"{info['parameters']:,} parameters, verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
