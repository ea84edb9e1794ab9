"""build_tokenizer: corpus shards in, Hugging Face tokenizer folder out."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from dataclasses import asdict

from .fast import build_unigram, save_folder
from .options import VocabOptions

# The vocabulary options (tokenizer/options.py) plus how the counting job runs.
EXECUTION = dict(runner="DirectRunner", workers=1, runner_args=None, stats=True)
DEFAULTS = {k: v for k, v in asdict(VocabOptions()).items() if k not in ("vocab_size", "algo")} | EXECUTION

log = logging.getLogger("tokenizer")


def build_tokenizer(data_dir: str, out_dir: str, vocab_size: int = VocabOptions.vocab_size,
                    algo: str = VocabOptions.algo, **options) -> dict:
    """Build the vocabulary and tokenizer from ``data_dir`` shards into ``out_dir``; returns stats.

    ``algo="wordpiece"``: jieba word + character vocabulary (T5 PEGASUS recipe),
    served by a Unigram model carrying jieba's scores.  ``algo="sentencepiece"``:
    a SentencePiece unigram model trained on the same text, same specials.
    Options: see ``DEFAULTS``.
    """
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown options: {sorted(unknown)}")
    opt = {**DEFAULTS, **options}
    opt["user_dict"] = opt["user_dict"] or None
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if algo == "wordpiece":
        from .counting import count_corpus
        from .jieba_util import jieba_instance
        from .vocab import jieba_scorer, select_vocab

        log.info("counting jieba words and characters in %s", data_dir)
        counts = count_corpus(
            data_dir,
            lowercase=opt["lowercase"],
            user_dict=opt["user_dict"],
            runner=opt["runner"],
            workers=opt["workers"],
            runner_args=opt["runner_args"],
        )
        log.info("%s documents, %s characters counted in %.0f s; selecting up to %s tokens",
                 f"{counts.documents:,}", f"{counts.characters:,}", time.time() - t0, f"{vocab_size:,}")
        dt = jieba_instance(opt["user_dict"])
        vocab = select_vocab(
            counts,
            vocab_size=vocab_size,
            min_char_freq=opt["min_char_freq"],
            min_word_freq=opt["min_word_freq"],
            max_word_len=opt["max_word_len"],
            cjk_score=jieba_scorer(dt.FREQ, dt.total),
            lowercase=opt["lowercase"],
            char_coverage=opt["char_coverage"],
            byte_fallback=opt["byte_fallback"],
        )
        tok = build_unigram(vocab.tokens, vocab.scores, opt["lowercase"], opt["byte_fallback"])
        train = {"documents": counts.documents, "characters": counts.characters}
    elif algo == "sentencepiece":
        # Not a Beam job: the SentencePiece trainer is one C++ process that reads one
        # local text file and keeps a sample of at most 2M lines in memory, so the
        # shards are streamed into that file directly (see tokenizer/spm.py).
        from .spm import train_sentencepiece

        log.info("training a SentencePiece unigram model on %s", data_dir)
        tok, train = train_sentencepiece(data_dir, vocab_size, out, **{
            k: opt[k] for k in ("lowercase", "min_char_freq", "char_coverage", "byte_fallback")})
    else:
        raise ValueError(f"algo must be 'wordpiece' or 'sentencepiece', not {algo!r}")
    save_folder(tok, out, opt["model_max_length"])
    if algo == "wordpiece":
        from .bulk import write_model

        write_model(out)  # jieba_unigram.model: the same ids through SentencePiece (tokenizer.bulk)
    if algo == "wordpiece" and opt["user_dict"]:
        from .jieba_util import USER_DICT_FILE

        # the scores come from its frequencies: JiebaWordPieceTokenizer.from_pretrained reloads it
        shutil.copyfile(opt["user_dict"], out / USER_DICT_FILE)
    stats = {
        "algo": algo,
        "vocab_size_requested": vocab_size,
        "vocab_size": tok.get_vocab_size(),
        "train": train,
        "options": {k: v for k, v in opt.items() if k not in ("stats",)},
        "build_seconds": round(time.time() - t0, 2),
    }
    log.info("%s tokens written to %s in %.0f s", f"{tok.get_vocab_size():,}", out, time.time() - t0)
    if opt["stats"]:
        from .stats import tokenizer_stats

        t1 = time.time()
        log.info("measuring held-out and shared-data coverage (--no-stats skips it)")
        stats.update(tokenizer_stats(out, data_dir))
        log.info("stats.json written in %.0f s", time.time() - t1)
    (out / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return stats
