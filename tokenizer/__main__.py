"""``python -m tokenizer``: build the vocabulary and tokenizer folder from corpus shards."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .build import DEFAULTS, build_tokenizer
from .options import VocabOptions
from .vocab import CHAR_COVERAGE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tokenizer",
        description="Build the jieba word + character vocabulary (T5 PEGASUS recipe) and a fast "
        "tokenizer folder that transformers.AutoTokenizer loads with no custom code.",
    )
    p.add_argument("--data", required=True, help="corpus folder: manifest.json and/or train/*.jsonl.gz (valid/ for stats)")
    p.add_argument("--out", required=True, help="output folder (tokenizer.json, vocab.txt, ...)")
    p.add_argument("--vocab-size", type=int, default=VocabOptions.vocab_size, help="upper bound; small corpora give fewer tokens")
    p.add_argument("--algo", choices=["wordpiece", "sentencepiece"], default=VocabOptions.algo)
    p.add_argument("--min-char-freq", type=int, default=DEFAULTS["min_char_freq"], help="keep characters seen at least K times")
    p.add_argument("--min-word-freq", type=int, default=DEFAULTS["min_word_freq"], help="keep words seen at least K times")
    p.add_argument("--max-word-len", type=int, default=DEFAULTS["max_word_len"], help="longest word (characters) in the vocab")
    p.add_argument("--user-dict", default=None, help="extra jieba dictionary (word [freq] [tag] per line)")
    p.add_argument("--no-lowercase", action="store_true", help="keep case (default lowercases, as T5 PEGASUS)")
    p.add_argument("--char-coverage", choices=sorted(CHAR_COVERAGE), default=DEFAULTS["char_coverage"],
                   help="Han characters of these character sets join the vocabulary even if the corpus lacks them "
                   "(at most a fifth of --vocab-size)")
    p.add_argument("--no-byte-fallback", action="store_true",
                   help="unknown characters become [UNK] instead of their UTF-8 byte pieces")
    p.add_argument("--runner", default="DirectRunner", help="Beam runner for the counting job")
    p.add_argument("--workers", type=int, default=1, help="DirectRunner worker processes")
    p.add_argument("--no-stats", action="store_true", help="skip held-out evaluation in stats.json")
    args, runner_args = p.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("tokenizer", "pipeline.progress"):     # the build's phases, and the counting's progress
        logging.getLogger(name).setLevel(logging.INFO)
    stats = build_tokenizer(
        args.data,
        args.out,
        vocab_size=args.vocab_size,
        algo=args.algo,
        min_char_freq=args.min_char_freq,
        min_word_freq=args.min_word_freq,
        max_word_len=args.max_word_len,
        user_dict=args.user_dict,
        lowercase=not args.no_lowercase,
        char_coverage=args.char_coverage,
        byte_fallback=not args.no_byte_fallback,
        runner=args.runner,
        workers=args.workers,
        runner_args=runner_args or None,
        stats=not args.no_stats,
    )
    json.dump(stats, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
