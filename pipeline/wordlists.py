"""Word-list filters (pornography, gambling, ads, spam): one Aho-Corasick pass for all lists.

Each list is a term-per-line file (``#`` comments): the user's own (any Beam filesystem) or
the small built-in lists in ``pipeline/wordlists/``, written by this project. A document is
rejected as ``wordlist_<name>`` when at least ``min_hits`` matches of that list cover more
than ``max_ratio`` of its visible characters: one mention of 百家乐 in a news story passes,
an advert repeating it does not. Matching is case-insensitive (``加VX`` = ``加vx``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import ahocorasick

from pipeline.config import WordList, WordlistConfig, section

BUILTIN = Path(__file__).resolve().parent / "wordlists"


def read_terms(data: str) -> list[str]:
    """Terms of a list file's text: one per line, ``#`` comments and blanks skipped, lowercased."""
    terms = (line.strip().lower() for line in data.splitlines())
    return sorted({t for t in terms if t and not t.startswith("#")})


def load_terms(spec: WordList) -> list[str]:
    if spec.path is None:
        path = BUILTIN / f"{spec.name}.txt"
        if not path.is_file():
            from pipeline.typed_config import ConfigError
            raise ConfigError(f"wordlists: no built-in list '{spec.name}' (built-in: "
                              f"{', '.join(sorted(p.stem for p in BUILTIN.glob('*.txt')))}); give its path")
        return read_terms(path.read_text(encoding="utf-8"))
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(spec.path) as f:
            return read_terms(f.read().decode("utf-8"))
    except (OSError, IOError, UnicodeDecodeError) as exc:
        from pipeline.typed_config import ConfigError
        raise ConfigError(f"wordlists.{spec.name}: cannot read {spec.path} ({type(exc).__name__})") from None


def _visible(text: str) -> int:
    return len(text) - sum(map(text.count, (" ", "\n", "\t")))


class WordlistMatcher:
    """All lists in one automaton; ``scores`` gives per-list (hits, covered characters)."""

    def __init__(self, lists: list[tuple[WordList, list[str]]]):
        self.specs = [spec for spec, _ in lists]
        owners: dict[str, list[int]] = {}
        for i, (_, terms) in enumerate(lists):
            for term in terms:
                owners.setdefault(term, []).append(i)
        self.automaton = ahocorasick.Automaton()
        for term, ids in owners.items():
            self.automaton.add_word(term, (len(term), tuple(ids)))
        self.empty = not owners
        if not self.empty:
            self.automaton.make_automaton()

    @classmethod
    def from_config(cls, cfg: "WordlistConfig | dict | None" = None) -> Optional["WordlistMatcher"]:
        c = section(WordlistConfig, cfg)
        if not c.enabled or not c.lists:
            return None
        return cls([(spec, load_terms(spec)) for spec in c.lists])

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def scores(self, text: str) -> list[tuple[int, int]]:
        """Per list: (matches, characters covered by its matches, overlaps once)."""
        spans: list[list[tuple[int, int]]] = [[] for _ in self.specs]
        if not self.empty:
            for end, (length, ids) in self.automaton.iter(text.lower()):
                for i in ids:
                    spans[i].append((end - length + 1, end + 1))
        return [(len(s), covered(s)) for s in spans]

    def reason(self, text: str) -> Optional[str]:
        """``wordlist_<name>`` of the first list over its thresholds, else None."""
        n = _visible(text)
        if self.empty or n == 0:
            return None
        matches = self.automaton.iter(text.lower())
        if next(matches, None) is None:        # most texts: no listed word at all
            return None
        for spec, (hits, cov) in zip(self.specs, self.scores(text)):
            if hits >= spec.min_hits and cov / n > spec.max_ratio:
                return f"wordlist_{spec.name}"
        return None


def covered(spans: list[tuple[int, int]]) -> int:
    """Characters covered by half-open [start, end) spans, overlaps counted once."""
    total, reach = 0, 0
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total
