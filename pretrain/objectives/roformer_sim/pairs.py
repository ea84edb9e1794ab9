"""RoFormer-Sim's training pairs: sentence pairs from documents, BART noise, PAWS-style word swaps
and labeled pair files."""
from __future__ import annotations

import random

from pipeline.typed_config import ConfigError


def make_pair(record: dict, opt, rng: random.Random) -> tuple[str, str]:
    """A (source, target) pair of similar sentences from one record: a labeled ``text_a``/``text_b``
    record as it is; else, with probability ``neighbor_prob``, a sentence and its neighbour, otherwise
    the sentence with itself (a SimCSE dropout positive whose seq2seq side is BART denoising)."""
    if "text_a" in record and "text_b" in record:
        return record["text_a"], record["text_b"]
    return pick_pair(sentences_of(record["text"], opt), opt, rng)


def sentences_of(text: str, opt) -> list[str]:
    """The sentences pairs are drawn from: min/max_sentence_chars long, or the text's head if none is."""
    from pipeline.sentences import split_sentences
    return [s for s in split_sentences(text, max_len=opt.max_sentence_chars)
            if len(s) >= opt.min_sentence_chars] or [text[:opt.max_sentence_chars]]


def pick_pair(sents: list, opt, rng: random.Random) -> tuple:
    """A sentence and, with probability ``neighbor_prob``, its neighbour (else itself); sentences
    may be texts or token ids."""
    i = rng.randrange(len(sents))
    if len(sents) > 1 and rng.random() < opt.neighbor_prob:
        j = i + 1 if i + 1 < len(sents) and (i == 0 or rng.random() < 0.5) else i - 1
        return sents[i], sents[j]
    return sents[i], sents[i]


def neighbor_pairs(records: list[dict], opt, limit: int) -> list[tuple[str, str]]:
    """Held-out (sentence, next sentence) pairs, round-robin over the records, at most ``limit``.

    Validation retrieves each sentence's neighbour among all the others: pairs from the same
    documents are topically close, so this is a real test (a sentence paired with itself, as half
    the training pairs are, would be found trivially).
    """
    from pipeline.sentences import split_sentences
    per_doc = []
    for r in records:
        sents = [s for s in split_sentences(r.get("text", ""), max_len=opt.max_sentence_chars)
                 if len(s) >= opt.min_sentence_chars]
        per_doc.append([(a, b) for a, b in zip(sents, sents[1:]) if a != b])
    out = []
    for i in range(max(map(len, per_doc), default=0)):
        out += [pairs[i] for pairs in per_doc if i < len(pairs)]
    return out[:limit]


def bart_noise(ids: list[int], opt, mask_id: int, rng: random.Random) -> list[int]:
    """BART-style corruption of a source (with probability ``noise_prob``): token deletion, then [MASK]."""
    if not ids or rng.random() >= opt.noise_prob:
        return ids
    draw, delete, mask = rng.random, opt.delete_ratio, opt.mask_ratio     # locals: this runs per token
    kept = [t for t in ids if draw() >= delete] or ids[:1]
    return [mask_id if draw() < mask else t for t in kept]


def swap_words(text: str, rng: random.Random) -> str | None:
    """``text`` with two different jieba words (not punctuation; multi-character ones when there are
    two) swapped, or None if it has fewer than two.

    PAWS builds its hard negatives this way: the same words in another order usually
    mean something else, and a bag-of-words encoder cannot tell them apart.
    """
    from tokenizer.jieba_util import cut

    words = cut(text)
    slots = [i for i, w in enumerate(words) if any(ch.isalnum() for ch in w)]
    longer = [i for i in slots if len(words[i]) > 1]   # swap whole words/names first, as PAWS does
    slots = longer if len(longer) >= 2 else slots
    for _ in range(8):
        if len(slots) < 2:
            return None
        i, j = rng.sample(slots, 2)
        if words[i] != words[j]:
            words[i], words[j] = words[j], words[i]
            return "".join(words)
    return None


def pair_file_paths(spec: str) -> list[str]:
    """``objective.pair_file``: comma-separated files or globs, each of which must match.

    A relative path is looked up from the working directory, then from the repository root,
    so the presets' shipped sample (data/sample-pairs) is found from any directory a launcher uses."""
    import glob
    import os

    from pretrain.config import REPO_ROOT

    paths = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        found = sorted(glob.glob(item))
        if not found and not os.path.isabs(item):
            found = sorted(glob.glob(str(REPO_ROOT / item)))
        if not found:
            raise ConfigError(f"objective.pair_file: {item} matches no file")
        paths += found
    return paths


def load_pair_files(opt) -> list[tuple[list, list, list]]:
    """(similar pairs, hard-negative rows, all rows as (s1, s2, score)) of each TSV file ``s1\\ts2[\\tlabel]``.

    An unlabeled row is a similar pair. A label is divided by its file's largest
    label (0/1 files and 0-5 STS-B scores alike): >= pair_positive_score is a pair,
    <= pair_negative_score a hard-negative row, anything between is left out.
    """
    sets = []
    for path in pair_file_paths(opt.pair_file):
        rows, pairs, negatives, scored = [], [], [], []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                cols = [c.strip() for c in line.rstrip("\n").split("\t")]
                if len(cols) < 2 or not cols[0] or not cols[1]:
                    continue
                try:
                    label = float(cols[2]) if len(cols) >= 3 and cols[2] else None
                except ValueError:
                    continue   # a header line
                rows.append((cols[0], cols[1], label))
        top = max((r[2] for r in rows if r[2] is not None), default=None)
        for a, b, label in rows:
            score = 1.0 if label is None else label / top if top > 0 else 0.0
            scored.append((a, b, score))
            if score >= opt.pair_positive_score:
                pairs.append((a, b))
            elif score <= opt.pair_negative_score:
                negatives.append((a, b))
        sets.append((pairs, negatives, scored))
    if not any(pairs for pairs, _, _ in sets):
        raise ConfigError(f"objective.pair_file {opt.pair_file}: no similar pairs found")
    return sets


# ---------------------------------------------------------------- inference helpers
