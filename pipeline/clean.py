"""Text cleaning steps: each one a named pure ``str -> str`` function.

Every step is testable without a Beam runner.  ``build_cleaner(cfg)`` composes
the steps switched on in the ``clean:`` section of configs/pipeline.yaml, in
the fixed order of ``STEP_ORDER`` (HTML before Unicode normalization so that
entities such as ``&#xff21;`` are normalized too; URL removal after NFKC so
that full-width ``ｈｔｔｐ：／／`` URLs are caught; whitespace last, then the
optional one-sentence-per-line rewrite).
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from pipeline.config import CleanConfig

from pipeline import opencc_triggers
from pipeline.sentences import split_sentences

# --------------------------------------------------------------------------
# Unicode normalization
# --------------------------------------------------------------------------

# Chinese punctuation kept as is, although NFKC would fold some of it to ASCII
# (，→, ！→! …→...): Chinese text uses the full-width forms, and the tokenizer's
# vocabulary (BERT-Chinese, WoBERT) has them as their own tokens.
CJK_PUNCTUATION = "，。！？；：（）“”‘’、…《》【】「」『』〈〉〔〕～—·"

# Only the kept characters that NFKC would change need protecting (，！？；：（）…～);
# each is swapped to a placeholder that NFKC leaves alone and swapped back
# afterwards.  Placeholders are Unicode noncharacters (U+FDD0..), reserved for
# internal use and never meant to appear in interchanged text.  The tokenizer
# (tokenizer/normalize.py, tokenizer.json) builds its normalizer from this very
# table, so cleaning and tokenization fold exactly the same characters.
NFKC_PLACEHOLDERS: dict[str, str] = {
    c: chr(0xFDD0 + i)
    for i, c in enumerate(c for c in CJK_PUNCTUATION if unicodedata.normalize("NFKC", c) != c)
}


_PLACEHOLDER_RE = re.compile("[" + "".join(NFKC_PLACEHOLDERS.values()) + "]")


def normalize_unicode(text: str, keep_cjk_punctuation: bool = True) -> str:
    """NFKC (full-width ASCII letters/digits/space → half-width, compatibility
    forms folded) while keeping Chinese punctuation ，。！？；：（）“” as is."""
    if text.isascii():
        return text
    if unicodedata.is_normalized("NFKC", text) and not _PLACEHOLDER_RE.search(text):   # quick checks, far
        return text                                                                      # cheaper than NFKC
    if not keep_cjk_punctuation:
        return unicodedata.normalize("NFKC", text)
    # str.replace per kept character: a few fast scans beat str.translate's per-character dict lookups
    for c, p in NFKC_PLACEHOLDERS.items():
        if c in text:
            text = text.replace(c, p)
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    for c, p in NFKC_PLACEHOLDERS.items():
        if p in text:
            text = text.replace(p, c)
    return text


# --------------------------------------------------------------------------
# Control and zero-width characters
# --------------------------------------------------------------------------

# C0/C1 controls except \t and \n; zero-width space/joiners, bidi marks and
# embeddings, word joiner family, BOM/ZWNBSP, soft hyphen, variation selectors
# and the object replacement character.
_CONTROL_RE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
    "\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff"
    "\ufe00-\ufe0f\ufff9-\ufffc]"
)
_CR_RE = re.compile(r"\r\n?")


def remove_control_chars(text: str) -> str:
    """Drop control, format (zero-width, bidi, BOM) characters; CR/CRLF → LF."""
    if "\r" in text:
        text = _CR_RE.sub("\n", text)
    return _CONTROL_RE.sub("", text)


# Private-use code points (BMP U+E000-F8FF, planes 15 and 16): a font's own glyphs (old
# GBK-era rare characters, icon fonts) that mean nothing to a model and no tokenizer knows.
_PRIVATE_USE_RE = re.compile("[\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd]")


def remove_private_use(text: str) -> str:
    """Drop private-use characters."""
    if text.isascii():
        return text
    return _PRIVATE_USE_RE.sub("", text)


# --------------------------------------------------------------------------
# Empty brackets
# --------------------------------------------------------------------------

# Brackets holding nothing but spaces and separators, left behind when markup (a Wikipedia
# template, a removed URL or emoji) is taken out: 干宝（），字令升 / 马尔可夫（，），生於 / 著作《》里.
_EMPTY_BRACKETS_RE = re.compile(
    r"[（(]([\s，,、；;：:'\"“”‘’]*)[）)]|《\s*》|「\s*」|『\s*』|【\s*】|\[\s*\]|〈\s*〉"
)


_BRACKET_RE = re.compile("[（()《「『【\\[〈]")


def remove_empty_brackets(text: str) -> str:
    """Remove empty brackets (also those holding only separators such as （，）)."""
    if not _BRACKET_RE.search(text):      # one scan instead of nine substring tests
        return text
    return _EMPTY_BRACKETS_RE.sub("", text)


# --------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------

_HTML_DROP_RE = re.compile(
    r"<(script|style|noscript|iframe)\b[^>]*>.*?</\1\s*>|<!--.*?-->|<!\[CDATA\[.*?\]\]>",
    re.IGNORECASE | re.DOTALL,
)
# Block-level tags become a line break so paragraphs stay paragraphs.
_HTML_BLOCK_RE = re.compile(
    r"</?(?:p|div|br|li|ul|ol|tr|table|h[1-6]|section|article|blockquote|pre|hr)\b[^<>]*>",
    re.IGNORECASE,
)
_HTML_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>|<!DOCTYPE[^<>]*>", re.IGNORECASE)


def strip_html(text: str) -> str:
    """Remove HTML tags (script/style bodies and comments included) and
    unescape entities (&amp; &nbsp; &#x4e2d; …); block tags become newlines."""
    text = _strip_tags(text)
    if "&" in text:
        # Escaped markup (&lt;b&gt;) becomes tags only now: strip once more.
        text = _strip_tags(html.unescape(text))
    return text


def _strip_tags(text: str) -> str:
    if "<" not in text:
        return text
    text = _HTML_DROP_RE.sub("", text)
    text = _HTML_BLOCK_RE.sub("\n", text)
    return _HTML_TAG_RE.sub("", text)


# --------------------------------------------------------------------------
# URLs and e-mail addresses
# --------------------------------------------------------------------------

_URL_RE = re.compile(
    r"(?:(?:https?|ftp)://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'*+,;=%]+"
    # bare short links common on Weibo: t.cn/RXyz, bit.ly/abc, dwz.cn/x
    r"|\b(?:[A-Za-z0-9-]+\.)+(?:cn|com|net|org|ly|me|io|cc)/[A-Za-z0-9\-._~/?#=&%]*",
    re.IGNORECASE,
)
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")


def remove_urls(text: str, replacement: str = "") -> str:
    """Replace http(s)/ftp/www URLs and bare short links (t.cn/…) by ``replacement``."""
    if "/" not in text and "w." not in text and "W." not in text:   # "://", "www." (any case), "x.cn/"
        return text
    return _URL_RE.sub(replacement, text)


def remove_emails(text: str, replacement: str = "") -> str:
    """Replace e-mail addresses by ``replacement``."""
    if "@" not in text:
        return text
    return _EMAIL_RE.sub(replacement, text)


# --------------------------------------------------------------------------
# Social-media markup: @mentions, #hashtags#, emoji
# --------------------------------------------------------------------------

# Weibo user names: CJK, letters, digits, _ - ·, up to 30 chars (plus "?"/U+FFFD:
# mojibake inside names is common in scraped data).  A repost
# chain "//@name:" is removed together with its "//" and the colon.
_MENTION_RE = re.compile(r"(?://)?@[\w\-·?\ufffd]{1,30}(?:\s*[:：])?\s?")
_HASHTAG_RE = re.compile(r"#([^#\n]{1,40})#")
# Weibo bracket emoticons: [哈哈] [爱你] [doge]
_BRACKET_EMOTICON_RE = re.compile(r"\[[\u4e00-\u9fffA-Za-z]{1,8}\]")
_EMOJI_RE = re.compile(
    "["
    "\U0001F000-\U0001FAFF"  # mahjong … symbols & pictographs extended-A
    "\U0001FC00-\U0001FFFF"
    "\u2600-\u27BF"  # misc symbols, dingbats
    "\u2B00-\u2BFF"  # arrows, stars ⭐
    "\u2300-\u23FF"  # misc technical ⌚⏰
    "\u3297\u3299\u303D\u00A9\u00AE\u2122"
    "\U000E0020-\U000E007F"  # tag characters (flag sequences)
    "\u200d\ufe0f"
    "]+"
)
# a character _EMOJI_RE can match: its BMP characters, or any astral one
_EMOJI_HINT = re.compile("[\u2600-\u27BF\u2B00-\u2BFF\u2300-\u23FF\u3297\u3299\u303D\u00A9\u00AE\u2122\u200d\ufe0f"
                         "\U00010000-\U0010FFFF]")


def remove_mentions(text: str, policy: str = "remove", replacement: str = "@用户") -> str:
    """@mentions: ``keep`` | ``remove`` (also "//@name:" repost markers) |
    ``replace`` (by ``replacement``, keeping the position)."""
    if policy == "keep" or "@" not in text:
        return text
    if policy == "replace":
        return _MENTION_RE.sub(replacement, text)
    return _MENTION_RE.sub("", text)


def handle_hashtags(text: str, policy: str = "unwrap", replacement: str = "", protect: tuple[str, ...] = ()) -> str:
    """#话题# hashtags: ``keep`` | ``unwrap`` (keep the topic, drop the #) |
    ``remove`` (drop the topic) | ``replace`` (by ``replacement``).  Tags in ``protect``
    (fill-in-the-blank markers such as chid's ``#idiom#``) are left alone: unwrapping
    them would insert the word "idiom" into the sentence."""
    if policy == "keep" or "#" not in text:
        return text
    new = {"unwrap": None, "replace": replacement}.get(policy, "")

    def sub(m: "re.Match[str]") -> str:
        if m.group(0) in protect:
            return m.group(0)
        return m.group(1) if new is None else new

    return _HASHTAG_RE.sub(sub, text)


def replace_blank_markers(text: str, markers: tuple[str, ...] = ("#idiom#",), replacement: str = "") -> str:
    """Fill-in-the-blank markers (``#idiom#``) replaced by ``replacement`` (or removed)."""
    for marker in markers:
        if marker in text:
            text = text.replace(marker, replacement)
    return text


def handle_emoji(text: str, policy: str = "remove", bracket_emoticons: bool = True) -> str:
    """Emoji: ``keep`` | ``remove``.  With ``bracket_emoticons`` the Weibo
    "[哈哈]" emoticon codes are removed as well."""
    if policy == "keep":
        return text
    if bracket_emoticons and "[" in text:
        text = _BRACKET_EMOTICON_RE.sub("", text)
    if text.isascii() or not _EMOJI_HINT.search(text):    # a small class with one astral range: 2x faster
        return text
    return _EMOJI_RE.sub("", text)


# --------------------------------------------------------------------------
# Traditional → simplified (optional OpenCC)
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _opencc_converter(config: str):
    """One OpenCC converter per process and config, built on first use (so the
    cleaner stays picklable for Beam workers)."""
    try:
        import opencc  # type: ignore
    except ImportError:
        return None
    return opencc.OpenCC(config)  # opencc >= 1.1 takes "t2s" and "t2s.json"


def to_simplified(text: str, config: str = "t2s") -> str:
    """Traditional → simplified Chinese with OpenCC (phrase-aware: 頭髮→头发,
    乾燥→干燥 but 乾隆 stays).  ``config``: t2s (default), tw2s / hk2s (Taiwan /
    Hong Kong variants), tw2sp (also Taiwan vocabulary: 軟體→软件)."""
    if text.isascii():
        return text
    triggers = opencc_triggers.pattern(config)
    if triggers is not None and not triggers.search(text):   # 96 % of texts: nothing OpenCC would change
        return text
    converter = _opencc_converter(config)
    if converter is None:
        raise ImportError("traditional_to_simplified needs the opencc package (pip install 'opencc>=1.1')")
    return converter.convert(text)


# --------------------------------------------------------------------------
# Sentence splitting (optional output mode)
# --------------------------------------------------------------------------


def one_sentence_per_line(text: str, max_len: int = 256) -> str:
    """Rewrite the document as one sentence per line: split after 。！？；… (with
    their closing quotes ”」』）) and at line breaks, sentences over ``max_len``
    characters cut at ，、： (hard-cut if none) — pipeline.sentences.split_sentences."""
    return "\n".join(split_sentences(text, max_len))


# --------------------------------------------------------------------------
# Whitespace
# --------------------------------------------------------------------------

_HSPACE_RE = re.compile(r"[^\S\n]+")  # any whitespace except newline
_CJK = r"\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_CJK_SPACE_RE = re.compile(rf"(?<=[{_CJK}]) (?=[{_CJK}])")


def collapse_whitespace(text: str, remove_cjk_spaces: bool = True) -> str:
    """Collapse runs of spaces/tabs/U+3000 to one space, strip every line and
    drop empty lines, so paragraphs are separated by exactly one ``\\n``.
    With ``remove_cjk_spaces`` a space between two CJK characters is dropped
    (an extraction artefact in Chinese text, "中 文" → "中文")."""
    lines = []
    for line in text.split("\n"):
        line = _HSPACE_RE.sub(" ", line).strip()
        if line:
            lines.append(line)
    out = "\n".join(lines)
    if remove_cjk_spaces and " " in out:
        out = _CJK_SPACE_RE.sub("", out)
    return out


def collapse_doubled(text: str, probe: int = 50) -> str:
    """Keep one copy of a text that ends with the same block twice in a row (``title + body +
    body``: a scraping artefact in 34 of 1,000 THUCNews articles), when the two copies cover at
    least half the text; three copies become one too. Such a text would otherwise go whole as
    ``repeated_ngrams``; a short repeat (a refrain, a repeated line) is left to the filters. The
    copies may be split by one space or newline. Left whole: four copies or more, and a copy that
    repeats itself (boilerplate, spam), for the filters to reject."""
    from pipeline.filters import repeated_ngram_ratio

    out = text
    for _ in range(3):
        shorter = _drop_last_copy(out, probe)
        if shorter is out:
            break
        out = shorter
    else:
        return text
    return out if out is text or repeated_ngram_ratio(out) <= 0.5 else text   # 0.5: the filter's default


def _drop_last_copy(text: str, probe: int, tries: int = 8) -> str:
    n = len(text)
    if n < 2 * probe:
        return text
    tail, end = text[-probe:], n - 1
    for _ in range(tries):
        j = text.rfind(tail, 0, end)
        if j < 0:
            return text
        size = n - (j + probe)              # the second copy: text[n - size:]
        if 4 * size < n:                    # walk left to where a first copy would end
            end = j + probe - 1
            continue
        for s, gap in ((size, 0), (size - 1, 1)):    # the copies back to back, or split by " " / "\n"
            start = n - 2 * s - gap
            if start >= 0 and (not gap or text[n - s - 1] in " \n") and text[start:start + s] == text[n - s:]:
                return text[:n - s - gap]
        end = j + probe - 1
    return text


# --------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------

STEP_ORDER = (
    "strip_html",
    "normalize_unicode",
    "remove_control_chars",
    "remove_private_use",
    "remove_urls",
    "remove_emails",
    "remove_mentions",
    "handle_blank_markers",
    "handle_hashtags",
    "handle_emoji",
    "remove_empty_brackets",
    "to_simplified",
    "collapse_whitespace",
    "collapse_doubled",
    "one_sentence_per_line",
)


def _replacing(fn, policy: str, replacement: str):
    """``fn`` with ``replacement`` under policy ``replace`` and "" under ``remove``."""
    return functools.partial(fn, replacement=replacement if policy == "replace" else "")


def cleaning_steps(cfg: "CleanConfig | dict | None" = None) -> list[tuple[str, Callable[[str], str]]]:
    """The enabled steps for a ``clean:`` section (defaults: ``pipeline.config.CleanConfig``), in order."""
    from pipeline.config import CleanConfig, section

    c = section(CleanConfig, cfg)
    markers = tuple(c.blank_markers)
    steps: list[tuple[str, Callable[[str], str]]] = []
    if c.strip_html:
        steps.append(("strip_html", strip_html))
    if c.unicode_nfkc:
        steps.append(("normalize_unicode", functools.partial(normalize_unicode, keep_cjk_punctuation=c.keep_cjk_punctuation)))
    if c.remove_control:
        steps.append(("remove_control_chars", remove_control_chars))
    if c.remove_private_use:
        steps.append(("remove_private_use", remove_private_use))
    if c.urls != "keep":
        steps.append(("remove_urls", _replacing(remove_urls, c.urls, c.url_replacement)))
    if c.emails != "keep":
        steps.append(("remove_emails", _replacing(remove_emails, c.emails, c.email_replacement)))
    if c.mentions != "keep":
        steps.append(("remove_mentions", functools.partial(remove_mentions, policy=c.mentions,
                                                           replacement=c.mention_replacement)))
    if markers and c.blank_policy != "keep":
        steps.append(("handle_blank_markers", functools.partial(
            replace_blank_markers, markers=markers, replacement=c.blank_replacement if c.blank_policy == "replace" else "")))
    if c.hashtags != "keep":
        steps.append(("handle_hashtags", functools.partial(handle_hashtags, policy=c.hashtags,
                                                           replacement=c.hashtag_replacement, protect=markers)))
    if c.emoji != "keep":
        steps.append(("handle_emoji", functools.partial(handle_emoji, policy=c.emoji,
                                                        bracket_emoticons=c.bracket_emoticons)))
    if c.remove_empty_brackets:
        steps.append(("remove_empty_brackets", remove_empty_brackets))
    if c.traditional_to_simplified:
        _opencc_converter.cache_clear()  # a failed import may have been cached
        if _opencc_converter(c.opencc_config) is None:  # fail at start, not silently per document
            raise ImportError("clean.traditional_to_simplified needs the opencc package (pip install 'opencc>=1.1')")
        steps.append(("to_simplified", functools.partial(to_simplified, config=c.opencc_config)))
    if c.collapse_whitespace:
        steps.append(("collapse_whitespace", functools.partial(collapse_whitespace, remove_cjk_spaces=c.remove_cjk_spaces)))
    if c.collapse_doubled:
        steps.append(("collapse_doubled", collapse_doubled))
    if c.split_sentences:
        steps.append(("one_sentence_per_line", functools.partial(one_sentence_per_line, max_len=c.max_sentence_chars)))
    return steps


def build_cleaner(cfg: "CleanConfig | dict | None" = None) -> Callable[[str], str]:
    """One ``str -> str`` function applying the enabled steps in order."""
    steps = [fn for _, fn in cleaning_steps(cfg)]

    def clean(text: str) -> str:
        for fn in steps:
            text = fn(text)
        return text

    return clean
