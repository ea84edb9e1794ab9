"""Language identification with CLD2 (``pycld2``): its wheel bundles the model, so it runs offline.

Chosen by ``bench/langid_bench.py`` (BENCHMARKS.md, "Data quality"): on real Chinese (modern,
classical, traditional, code-mixed), English lines from the corpora and a written sample of
other languages and code, CLD2 with the rule below kept/rejected more texts correctly than
lingua, CLD3, fastText's bundled lid.176.ftz, py3langid and langdetect, at a fraction of
lingua's memory (its all-language models take ~0.9 GB per worker).

Rule: a document is rejected as ``lang_<code>`` when CLD2 reliably names another language as
its main one, covering at least ``min_score`` of the text. Texts CLD2 cannot place (``un``,
common for short classical poems and emoticon-laden posts) are kept: the ``min_chinese_ratio``
filter already handles text without Chinese characters.

Script check: CLD2 calls some Han-only text Japanese (15 of 20,000 THUCNews headlines, e.g.
``湖北文科双料状元：享受“追”一位女生的感觉``). Japanese prose writes its grammar in kana and Korean
in Hangul, so ``ja`` needs kana and ``ko`` Hangul for at least ``SCRIPT_SHARE`` of the text's Han
plus that script; otherwise the text is Chinese (``zh``).
"""

from __future__ import annotations

import functools
import re
from typing import Optional

import pycld2

from pipeline.config import LangIdConfig, section

MAX_CHARS = 20_000          # CLD2 reads the start of long documents; enough to decide
SCRIPT_SHARE = 0.05
# kana without U+30FB/U+30FC (・ and ー, common in Chinese: 迈克尔・杰克逊), and Hangul
_KANA = re.compile("[\u3041-\u309f\u30a0-\u30fa\u30fd-\u30ff\u31f0-\u31ff\uff66-\uff9d]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SCRIPT = {"ja": _KANA, "ko": _HANGUL}


def script_allows(code: str, text: str) -> bool:
    """False when ``code`` is ja/ko but the text lacks that language's own script (kana,
    Hangul) for ``SCRIPT_SHARE`` of its Han + that script."""
    pattern = _SCRIPT.get(code)
    if pattern is None:
        return True
    own = len(pattern.findall(text))
    return own > 0 and own >= SCRIPT_SHARE * (own + len(_HAN.findall(text)))


@functools.lru_cache(maxsize=None)
def _code(cld2_code: str) -> str:
    """CLD2 codes to ISO 639-1 style: zh-Hant -> zh, un stays un."""
    return cld2_code.split("-")[0].lower()


class LanguageIdentifier:
    """``langid:`` section applied to one text."""

    def __init__(self, cfg: "LangIdConfig | dict | None" = None):
        c = section(LangIdConfig, cfg)
        self.enabled = c.enabled
        self.languages = frozenset(c.languages)
        self.min_score = c.min_score
        self.min_chars = c.min_chars

    def top(self, text: str) -> tuple[str, float, bool]:
        """(main language code, share of the text in it 0..1, CLD2's reliability flag)."""
        text = text[:MAX_CHARS]
        try:
            reliable, _, details = pycld2.detect(text.replace("\n", " "))
        except pycld2.error:     # invalid UTF-8 sequences CLD2 refuses (lone surrogates)
            return "un", 0.0, False
        code = _code(details[0][1])
        share = 0
        for _, c, p, _ in details:       # a plain loop: this runs once per document
            if _code(c) == code:
                share += p
        if not script_allows(code, text):
            code = "zh"                  # Han-only text CLD2 called ja/ko: its share, relabelled
        return code, share / 100.0, reliable

    def keep(self, text: str) -> tuple[bool, str, float]:
        """(kept, language, score) - language and score go into the output record."""
        code, share, reliable = self.top(text)
        if not self.enabled or len(text) < self.min_chars:
            return True, code, share
        rejected = code not in self.languages and code != "un" and reliable and share >= self.min_score
        return not rejected, code, share

    def reason(self, text: str) -> Optional[str]:
        kept, code, _ = self.keep(text)
        return None if kept else f"lang_{code}"
