"""Decontamination: drop (or flag) training documents that share a long n-gram with an eval set.

Whitespace-split n-grams (lm-eval's) mean nothing in Chinese, so the unit is the character:
both sides are normalized (traditional -> simplified, NFKC, lowercase, every space and
punctuation mark removed, a Latin word or number counted as one character) and a document is contaminated by an evaluation set when
one of its ``ngram``-character windows (13 by default, GPT-3's size) occurs in one of the set's
items. Items shorter than ``ngram`` (many LCQMC/BQ questions) are matched whole when they have
at least ``MIN_ITEM_CHARS`` characters. The index is a hash table of 64-bit n-gram hashes with
a bitmask of the sets each came from. Building it takes about 2 s (the project's sets hold 81k
items), so it is cached on disk under ``$ZH_PRETRAIN_CACHE`` (default ``~/.cache/zh-pretrain``),
keyed by the sets' file contents, ``ngram`` and this code: a run or worker after the first loads
it in a few tens of milliseconds. ``ZH_PRETRAIN_CACHE=off`` disables the cache; a cache folder
that cannot be written is skipped.

The project's own sets are the STS *test* files, the CSL title test set and CMRC 2018 dev under
``$ZH_SHARED_DATA`` (their absence is noted in stats.json, not an error); sets the user names in
``decontam.eval_sets`` must exist.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from pipeline.charhash import HashTable, alnum_table, codepoints as _codepoints, prefix_sums, span_hashes
from pipeline.clean import to_simplified
from pipeline.config import DecontamConfig, EvalSet, project_eval_sets, section
from pipeline.typed_config import ConfigError

log = logging.getLogger(__name__)
MIN_ITEM_CHARS = 8
_NL = 10
_WORD_BASE, _WORD_SPAN = 0xF0000, 0xFFFE      # a Latin word or number becomes one plane-15 code point
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
def _normalized(text: str, keep_lines: bool = False, nfkc: bool = True) -> np.ndarray:
    """``normalize`` as code points, in a few numpy passes (regular expressions over a whole
    batch cost several times more): lowercase, keep what is alphanumeric (and line breaks with
    ``keep_lines``), a run of ASCII letters and digits -> one code point (a hash of the run),
    3 or more equal characters in a row -> one."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    cp = _codepoints(text.lower())
    keep = alnum_table()[cp]
    if keep_lines:
        keep |= cp == _NL
    cp = cp[keep]
    word = ((cp >= 0x61) & (cp <= 0x7A)) | ((cp >= 0x30) & (cp <= 0x39))
    if word.any():
        start = word & ~np.r_[False, word[:-1]]
        at = np.flatnonzero(start)
        ends = np.flatnonzero(word & ~np.r_[word[1:], False]) + 1
        h = span_hashes(prefix_sums(cp), at, ends - at)
        cp = cp.copy()
        cp[at] = (_WORD_BASE + h % np.uint64(_WORD_SPAN)).astype(np.uint32)
        cp = cp[~word | start]
    if cp.size:
        new = np.r_[True, cp[1:] != cp[:-1]]
        run = np.cumsum(new) - 1
        cp = cp[new | (np.bincount(run)[run] < 3) | (cp == _NL)]
    return cp


def normalize(text: str, keep_lines: bool = False, nfkc: bool = True) -> str:
    """NFKC, lowercase, no spaces or punctuation; each Latin word or number becomes one
    character and runs of one character collapse, so that 13 "characters" are 13 Chinese
    characters or words ("international" alone, or "1111111", is not a 13-gram).
    ``keep_lines``: line breaks survive, to normalize many items joined in one call.
    ``nfkc=False`` for text the cleaner normalized already: what it keeps un-folded (Chinese
    punctuation) is stripped here anyway, and NFKC is a third of this function's time."""
    return _normalized(text, keep_lines, nfkc).tobytes().decode("utf-32-le")


def _lines(texts: list[str], nfkc: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The texts normalized in one call: (code points laid end to end, start and length of each)."""
    cp = _normalized("\n".join(t.replace("\n", " ") for t in texts), keep_lines=True, nfkc=nfkc)
    breaks = np.flatnonzero(cp == _NL)
    lengths = np.diff(np.r_[-1, breaks, cp.size]) - 1 if texts else np.zeros(0, np.int64)
    starts = np.cumsum(lengths) - lengths
    return cp[cp != _NL], starts, lengths


def expand_path(path: str) -> str:
    """``$ZH_SHARED_DATA`` (default: the shared data folder beside the repository) and ``~``."""
    env = {"ZH_SHARED_DATA": os.environ.get("ZH_SHARED_DATA", str(DEFAULT_ROOT))}
    return os.path.expanduser(re.sub(r"\$\{?ZH_SHARED_DATA\}?", lambda _: env["ZH_SHARED_DATA"], path))


def read_eval_items(spec: EvalSet) -> Iterator[str]:
    """The texts of one eval set (every matching file)."""
    for path in sorted(glob.glob(expand_path(spec.path))):
        with open(path, encoding="utf-8-sig") as f:
            if spec.format == "squad":
                for article in json.load(f)["data"]:
                    for para in article["paragraphs"]:
                        yield para["context"]
                        for qa in para.get("qas", []):
                            yield qa["question"]
            elif spec.format == "tsv":
                for line in f:
                    cols = line.rstrip("\n").split("\t")
                    yield from (cols[i] for i in spec.columns if i < len(cols))
            else:
                yield from (line.rstrip("\n") for line in f)


def _windows(starts: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(owner, start) of every n-character window inside one of the texts laid end to end."""
    per = np.maximum(lengths - n + 1, 0)
    owners = np.repeat(np.arange(len(lengths)), per)
    return owners, np.repeat(starts, per) + np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)


class _HashSet:
    """uint64 hashes (duplicates merged, payloads OR-ed) in a HashTable."""

    def __init__(self, hashes: np.ndarray, payload: np.ndarray, table: HashTable | None = None):
        if table is None:
            uniq, inv = np.unique(hashes, return_inverse=True)
            merged = np.zeros(uniq.size, np.uint64)
            np.bitwise_or.at(merged, inv, payload)
            table = HashTable(uniq, merged)
        self.table = table

    def lookup(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``h`` that are members, their payloads)."""
        return self.table.hits(h)


@dataclass
class EvalIndex:
    """n-gram hashes of the long items (payload: bitmask of sets); short items keyed by the
    hash of their first MIN_ITEM_CHARS characters, verified whole on a prefix hit."""
    names: list[str]
    ngrams: _HashSet
    prefixes: _HashSet          # payload: group number in ``short``
    short: list                 # per prefix: [(length, full hash, set mask)]
    items: dict                 # set name -> number of items indexed
    missing: list               # project sets whose files are absent

    def masks(self, texts: list[str], n: int, nfkc: bool = True) -> list[int]:
        """Per text, the bitmask of the eval sets sharing an n-gram (or a whole short item) with
        it; texts must be simplified already (and NFKC-normalized, with ``nfkc=False``). One
        normalization, one prefix sum and one table lookup per batch."""
        cp, starts, lengths = _lines(texts, nfkc)
        prefix = prefix_sums(cp)
        out = np.zeros(len(texts), np.uint64)
        owners, window_starts = _windows(starts, lengths, n)
        at, vals = self.ngrams.lookup(span_hashes(prefix, window_starts, n))
        np.bitwise_or.at(out, owners[at], vals)
        result = [int(m) for m in out]
        if self.short:
            owners, window_starts = _windows(starts, lengths, MIN_ITEM_CHARS)
            at, groups = self.prefixes.lookup(span_hashes(prefix, window_starts, MIN_ITEM_CHARS))
            ends = starts + lengths
            for doc, pos, group in zip(owners[at].tolist(), window_starts[at].tolist(), groups.tolist()):
                for length, full, mask in self.short[group]:
                    if pos + length <= ends[doc] and span_hashes(prefix, np.array([pos]), length)[0] == full:
                        result[doc] |= mask
        return result

    def set_names(self, mask: int) -> list[str]:
        return [name for i, name in enumerate(self.names) if mask >> i & 1]


def eval_sets(c: DecontamConfig) -> list[EvalSet]:
    """The project's sets (when ``project_sets``) then the user's, in bit order."""
    return (project_eval_sets() if c.project_sets else []) + list(c.eval_sets)


def set_status(cfg: "DecontamConfig | dict | None" = None) -> dict[str, str]:
    """Eval set name -> "checked" or "missing" (no file matches), for stats.json."""
    return {s.name: "checked" if glob.glob(expand_path(s.path)) else "missing"
            for s in eval_sets(section(DecontamConfig, cfg))}


# What the cached index depends on besides the sets and ``ngram``: the code that normalizes and
# hashes (a change there makes every cached index stale) and OpenCC's conversion tables.
_CACHE_CODE = ("decontam.py", "charhash.py", "clean.py")


def cache_root() -> Optional[Path]:
    """The cache folder (``$ZH_PRETRAIN_CACHE``, default ``~/.cache/zh-pretrain``); None when off."""
    root = os.environ.get("ZH_PRETRAIN_CACHE", "")
    if root.lower() in ("off", "0", "none"):
        return None
    return Path(os.path.expanduser(root or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "zh-pretrain")))


def index_key(c: DecontamConfig, sets: list[EvalSet]) -> str:
    """sha256 of everything the index is built from: each set's spec and the contents of the files
    it matches (not their times: a copied folder hits the cache), ``ngram``, and the code."""
    from importlib import metadata

    try:
        opencc = metadata.version("opencc")
    except metadata.PackageNotFoundError:
        opencc = ""
    h = hashlib.sha256(json.dumps({"ngram": c.ngram, "min_item_chars": MIN_ITEM_CHARS, "opencc": opencc}).encode())
    here = Path(__file__).resolve().parent
    for name in _CACHE_CODE:
        h.update(hashlib.sha256((here / name).read_bytes()).digest())
    for spec in sets:
        h.update(json.dumps([spec.name, spec.format, list(spec.columns)]).encode())
        for path in sorted(glob.glob(expand_path(spec.path))):
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\x00")
    return h.hexdigest()


def _save_index(index: "EvalIndex", path: Path) -> None:
    """The index as one .npz (tables as they are, so loading rebuilds nothing), written atomically."""
    rows = [(g, length, int(full), mask) for g, group in enumerate(index.short) for length, full, mask in group]
    g, lengths, full, masks = (np.array(col, np.uint64) for col in zip(*rows)) if rows else [np.zeros(0, np.uint64)] * 4
    meta = json.dumps({"names": index.names, "items": index.items, "missing": index.missing,
                       "bits": [index.ngrams.table.bits, index.prefixes.table.bits]})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.frombuffer(meta.encode(), np.uint8), ngram_keys=index.ngrams.table.keys,
                 ngram_vals=index.ngrams.table.vals, prefix_keys=index.prefixes.table.keys,
                 prefix_vals=index.prefixes.table.vals, short_group=g, short_length=lengths, short_full=full,
                 short_mask=masks)
    os.replace(tmp, path)


def _table(keys: np.ndarray, vals: np.ndarray, bits: int) -> HashTable:
    table = HashTable.__new__(HashTable)
    table.bits, table.mask, table.keys, table.vals = bits, (1 << bits) - 1, keys, vals
    return table


def _load_index(path: Path) -> "EvalIndex":
    with np.load(path) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        ngrams = _HashSet(None, None, _table(z["ngram_keys"], z["ngram_vals"], meta["bits"][0]))
        prefixes = _HashSet(None, None, _table(z["prefix_keys"], z["prefix_vals"], meta["bits"][1]))
        short: list = [[] for _ in range(int(z["short_group"].max()) + 1 if z["short_group"].size else 0)]
        for g, length, full, mask in zip(z["short_group"].tolist(), z["short_length"].tolist(), z["short_full"],
                                         z["short_mask"].tolist()):
            short[g].append((length, full, mask))
    return EvalIndex(meta["names"], ngrams, prefixes, short, meta["items"], meta["missing"])


def check_user_sets(c: DecontamConfig) -> None:
    """Every set the user names matches a file (the project's own may be absent)."""
    for spec in c.eval_sets:
        if not glob.glob(expand_path(spec.path)):
            raise ConfigError(f"decontam.eval_sets: '{spec.name}': no file matches {spec.path}")


def build_index(cfg: "DecontamConfig | dict | None" = None) -> Optional[EvalIndex]:
    """The eval sets of a ``decontam:`` section, indexed (from the disk cache when it holds this
    index); None when switched off."""
    c = section(DecontamConfig, cfg)
    if not c.enabled:
        return None
    sets = eval_sets(c)
    if len(sets) > 63:
        raise ConfigError(f"decontam: at most 63 eval sets, got {len(sets)}")
    check_user_sets(c)
    root = cache_root()
    path = root / "decontam" / f"index-{index_key(c, sets)[:32]}.npz" if root else None
    if path is not None and path.is_file():
        try:
            return _load_index(path)
        except (OSError, EOFError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:   # damaged: rebuilt
            log.warning("decontamination index cache %s unreadable (%s); rebuilding it", path, type(exc).__name__)
    index = _build_index(c, sets)
    if path is not None:
        try:
            _save_index(index, path)
        except OSError as exc:
            log.info("decontamination index not cached (%s: %s)", path.parent, exc.strerror or exc)
    return index


def _build_index(c: DecontamConfig, sets: list[EvalSet]) -> EvalIndex:
    texts, owner, items, missing = [], [], {}, []
    for i, spec in enumerate(sets):
        if not glob.glob(expand_path(spec.path)):      # a user's set is there (build_index checked)
            missing.append(spec.name)
            continue
        before = len(texts)
        texts.extend(t.replace("\n", " ") for t in read_eval_items(spec))
        owner.extend([i] * (len(texts) - before))
    # one OpenCC call and one prefix sum for all items; then every window inside an item
    cp, starts, lengths = _lines(to_simplified("\n".join(texts)).split("\n") if texts else [])
    prefix = prefix_sums(cp)
    bits = np.left_shift(np.uint64(1), np.array(owner, dtype=np.uint64))
    long_ = lengths >= c.ngram
    owners, window_starts = _windows(starts, lengths, c.ngram)
    ngrams = _HashSet(span_hashes(prefix, window_starts, c.ngram), bits[owners])
    short = (lengths >= MIN_ITEM_CHARS) & ~long_
    full = span_hashes(prefix, starts[short], lengths[short])
    first = span_hashes(prefix, starts[short], MIN_ITEM_CHARS)
    groups: dict[int, dict] = {}
    for length, f, p, mask in zip(lengths[short].tolist(), full.tolist(), first.tolist(), bits[short].tolist()):
        rows = groups.setdefault(p, {})
        rows[(length, f)] = rows.get((length, f), 0) | mask
    prefixes = _HashSet(np.array(list(groups), dtype=np.uint64), np.arange(len(groups), dtype=np.uint64))
    counted = np.bincount(np.array(owner, dtype=np.int64)[lengths >= MIN_ITEM_CHARS], minlength=len(sets)) \
        if texts else np.zeros(len(sets), np.int64)
    for i, spec in enumerate(sets):
        if spec.name not in missing:
            items[spec.name] = int(counted[i])
    return EvalIndex([s.name for s in sets], ngrams, prefixes,
                     [[(length, np.uint64(f), mask) for (length, f), mask in rows.items()] for rows in groups.values()],
                     items, missing)


class Decontaminator:
    """``decontam:`` applied to one text: (reject reason or None, contaminating set names)."""

    def __init__(self, cfg: "DecontamConfig | dict | None" = None, simplify: bool = True, nfkc: bool = True):
        """``simplify=False`` when the texts are simplified already (clean.traditional_to_simplified),
        ``nfkc=False`` when they are NFKC-normalized already (clean.unicode_nfkc)."""
        c = section(DecontamConfig, cfg)
        self.simplify = simplify
        self.nfkc = nfkc
        self.n = c.ngram
        self.action = c.action
        self.index = build_index(c)

    def batch(self, texts: list[str]) -> list[tuple[Optional[str], list[str]]]:
        """Per text: (reject reason or None, names of the eval sets it shares text with)."""
        if self.index is None:
            return [(None, [])] * len(texts)
        if self.simplify:
            texts = [to_simplified(t) for t in texts]
        out = []
        for mask in self.index.masks(texts, self.n, self.nfkc):
            sets = self.index.set_names(mask)
            out.append((f"decontam_{sets[0]}" if sets and self.action == "reject" else None, sets))
        return out

    def __call__(self, text: str) -> tuple[Optional[str], list[str]]:
        return self.batch([text])[0]
