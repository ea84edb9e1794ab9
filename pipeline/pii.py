"""Personal information in Chinese text: detected with checksums and context, then masked.

Regexes alone over-match in Chinese text full of order numbers, timestamps and product codes,
so every entity type is validated:

* ``id_card``: 18 characters, GB 11643 check digit, a province code that exists, a real birth
  date (1900 to today);
* ``bank_card``: 16-19 digits (spaces or dashes between groups of four), Luhn, and an issuer
  prefix (UnionPay 62, Visa 4, Mastercard 51-55) or a card keyword just before it;
* ``mobile``: 1[3-9]x numbers of the mainland's allocated ranges, with +86/0086 and separators;
* ``landline``: 0 + area code + 7-8 digit number, with parentheses, a separator or a phone keyword;
* ``credit_code``: unified social credit code (GB 32100), its mod-31 check character and the
  embedded organization code's mod-11 check;
* ``email``; ``ip`` (IPv4 octets <= 255, IPv6 via ``ipaddress``);
* ``qq`` / ``wechat``: only when a keyword (QQ, 扣扣, 微信, VX ...) introduces them.

A number directly after an order/serial/model keyword (订单号, 编号, 型号, 版本 ...) or before a
unit (元, 次 ...) is not personal information. ``find(text)`` returns the spans;
``PiiMasker`` applies the per-type action of the ``pii:`` config section.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from typing import NamedTuple, Optional

from pipeline.config import PiiConfig, section

TYPES = ("id_card", "credit_code", "bank_card", "mobile", "landline", "email", "ip", "qq", "wechat")
# On overlap the keyword-introduced ids win (微信：138... is a WeChat id), then the checksummed types.
PRIORITY = ("qq", "wechat", "id_card", "credit_code", "bank_card", "mobile", "landline", "email", "ip")


class Span(NamedTuple):
    start: int
    end: int
    type: str


# --------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
PROVINCES = frozenset({11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45,
                       46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83})


def id_check_char(first17: str) -> str:
    """GB 11643 check character of the first 17 digits."""
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS)) % 11]


def valid_id_card(number: str) -> bool:
    """18-character resident ID: province code, birth date and check character."""
    if len(number) != 18 or not number[:17].isdigit() or int(number[:2]) not in PROVINCES:
        return False
    try:
        born = datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    if not datetime.date(1900, 1, 1) <= born <= datetime.date.today():
        return False
    return id_check_char(number[:17]) == number[17].upper()


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {c: i for i, c in enumerate(_USCC_ALPHABET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_VALUE = {**{str(i): i for i in range(10)}, **{chr(65 + i): 10 + i for i in range(26)}}


def uscc_check_char(first17: str) -> str:
    """GB 32100 check character (mod 31) of a unified social credit code."""
    return _USCC_ALPHABET[(31 - sum(_USCC_VALUE[c] * w for c, w in zip(first17, _USCC_WEIGHTS)) % 31) % 31]


def org_check_char(first8: str) -> str:
    """GB 11714 check character (mod 11) of the organization code inside a credit code."""
    r = 11 - sum(_ORG_VALUE[c] * w for c, w in zip(first8, _ORG_WEIGHTS)) % 11
    return "X" if r == 10 else "0" if r == 11 else str(r)


def valid_credit_code(code: str) -> bool:
    code = code.upper()
    if len(code) != 18 or any(c not in _USCC_VALUE for c in code) or not code[2:8].isdigit():
        return False
    if code[0] not in "123456789ANY" or int(code[2:4]) not in PROVINCES:
        return False
    org = code[8:17]
    if any(c not in _ORG_VALUE for c in org[:8]) or org_check_char(org[:8]) != org[8]:
        return False
    return uscc_check_char(code[:17]) == code[17]


# --------------------------------------------------------------------------
# Context: what a number is introduced by, or followed by
# --------------------------------------------------------------------------

# A number right after one of these is an order/serial/model/version number, not a person's.
_NOT_PII_BEFORE = re.compile(
    r"(?:订单|单号|编号|编码|流水|型号|货号|序列号|条码|条形码|批号|批次|工单|运单|快递|物流|交易号|票号|发票|"
    r"产品码|商品码|串号|识别码|序号|版本|专利|证书号|合同号|案号|车牌|ISBN|ISSN|SKU|SN|S/N|"
    r"order|serial|model|version|ver\.?|build|v)(?:号码|号|码|编号|no\.?|id)?\s*[:：#.]?\s*$",
    re.IGNORECASE,
)
_NOT_PII_AFTER = re.compile(r"^\s*(?:版|元|万|亿|美元|块|次|倍|人|个|件|台|股|吨|米|%|‰|年|号楼|Hz|MB|GB|KB)")
_CARD_KEYWORD = re.compile(r"(?:卡号|银行卡|信用卡|储蓄卡|借记卡|账号|帐号|账户|帐户|开户|收款|转账|汇款|card)[^\n，。]{0,8}$",
                           re.IGNORECASE)
_PHONE_KEYWORD = re.compile(r"(?:电话|座机|固话|手机|传真|热线|联系方式|tel|fax|phone)[^\n，。]{0,6}$", re.IGNORECASE)


def _context_ok(text: str, start: int, end: int) -> bool:
    return not _NOT_PII_BEFORE.search(text[max(0, start - 12):start]) and not _NOT_PII_AFTER.match(text[end:end + 3])


# --------------------------------------------------------------------------
# Detectors: candidates by regex, kept when valid
# --------------------------------------------------------------------------

_B = r"(?<![0-9A-Za-z])"      # not inside a longer alphanumeric token
_E = r"(?![0-9A-Za-z])"
_ID_RE = re.compile(_B + r"(\d{6}) ?(\d{8}) ?(\d{3}[\dXx])" + _E)
_CREDIT_RE = re.compile(_B + r"[0-9A-Za-z]{18}" + _E)
_CARD_RE = re.compile(_B + r"\d{4}(?:[ -]?\d{4}){3}(?:[ -]?\d{1,3})?" + _E)
_MOBILE_RE = re.compile(r"(?<![0-9A-Za-z+])(?:(?:\+|00)86[ -]?|86-)?(1[3-9]\d)([ -]?)(\d{4})\2(\d{4})" + _E)
_MOBILE_PREFIX = re.compile(r"1(?:3\d|4[5-9]|5[0-35-9]|6[2567]|7[0-8]|8\d|9[0-35-9])")
_LANDLINE_RE = re.compile(
    r"(?<![0-9A-Za-z])(?:[(（](0\d{2,3})[)）]\s?|(0\d{2,3})([ -])|(0\d{2,3}))([2-9]\d{6,7})(?:-\d{1,4})?" + _E)
_EMAIL_RE = re.compile(r"(?<![A-Za-z0-9.%+_-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.([A-Za-z]{2,12})\b")
_FILE_EXT = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "pdf", "js", "css"})
_IPV4_RE = re.compile(r"(?<![A-Za-z0-9_.])(?:\d{1,3}\.){3}\d{1,3}(?![A-Za-z0-9_]|\.\d)")
_IPV6_RE = re.compile(r"(?<![A-Za-z0-9_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![A-Za-z0-9_:])")
_QQ_RE = re.compile(r"(?:QQ|扣扣|企鹅)(?:号码|号|群)?\s*(?:[:：]|是|为)?\s*([1-9]\d{4,10})" + _E, re.IGNORECASE)
_WECHAT_RE = re.compile(
    r"(?:微信|威信|薇信|V信|wechat|weixin|vx|wx)(?:号码|号|id)?\s*(?:[:：]|是|为)?\s*"
    r"((?<![A-Za-z0-9])[A-Za-z][-_A-Za-z0-9]{5,19}|1[3-9]\d{9})" + _E, re.IGNORECASE)


def _id_cards(text):
    for m in _ID_RE.finditer(text):
        if valid_id_card("".join(m.groups())) and _context_ok(text, m.start(), m.end()):
            yield m.start(), m.end()


def _credit_codes(text):
    for m in _CREDIT_RE.finditer(text):
        if valid_credit_code(m.group()) and _context_ok(text, m.start(), m.end()):
            yield m.start(), m.end()


_STRONG_IIN = re.compile(r"62\d{14,17}|4\d{15}|4\d{18}|5[1-5]\d{14}")


def _bank_cards(text):
    for m in _CARD_RE.finditer(text):
        raw = m.group()
        seps = set(re.findall(r"[ -]", raw))
        digits = re.sub(r"[ -]", "", raw)
        if len(seps) > 1 or not 16 <= len(digits) <= 19 or not luhn_ok(digits):
            continue
        if not _context_ok(text, m.start(), m.end()):
            continue
        if _STRONG_IIN.fullmatch(digits) or (digits[0] in "3456789" and _CARD_KEYWORD.search(text[max(0, m.start() - 16):m.start()])):
            yield m.start(), m.end()


def _mobiles(text):
    for m in _MOBILE_RE.finditer(text):
        if _MOBILE_PREFIX.fullmatch(m.group(1)) and _context_ok(text, m.start(), m.end()):
            yield m.start(), m.end()


def _area_code_ok(code: str) -> bool:
    """010, 02x (3 digits after 0 is 1 or 2), else 0 + 3 digits from 3xx to 9xx."""
    return code == "010" or (len(code) == 3 and code[1] == "2") or (len(code) == 4 and code[1] in "3456789")


def _landlines(text):
    for m in _LANDLINE_RE.finditer(text):
        paren, sep_code, bare = m.group(1), m.group(2), m.group(4)
        code = paren or sep_code or bare
        number = m.group(5)
        if not _area_code_ok(code) or (len(code) == 3 and len(number) != 8):
            continue
        if bare and not _PHONE_KEYWORD.search(text[max(0, m.start() - 12):m.start()]):
            continue   # 0 + 10-11 digits with no separator and no phone keyword: too ambiguous
        if _context_ok(text, m.start(), m.end()):
            yield m.start(), m.end()


def _emails(text):
    if "@" not in text:
        return
    for m in _EMAIL_RE.finditer(text):
        if m.group(1).lower() not in _FILE_EXT:
            yield m.start(), m.end()


def _ips(text, v4: bool = True):
    if v4 and "." in text:
        for m in _IPV4_RE.finditer(text):
            parts = m.group().split(".")
            if all(int(p) <= 255 and (p == "0" or not p.startswith("0")) for p in parts) and _context_ok(text, m.start(), m.end()):
                yield m.start(), m.end()
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6_RE.finditer(text):
            try:
                ipaddress.IPv6Address(m.group())
            except ValueError:
                continue
            if sum(1 for g in m.group().split(":") if g) >= 2:
                yield m.start(), m.end()


def _keyword_ids(regex):
    def find(text):
        for m in regex.finditer(text):
            yield m.start(1), m.end(1)
    return find


_DETECTORS = {
    "id_card": _id_cards, "credit_code": _credit_codes, "bank_card": _bank_cards, "mobile": _mobiles,
    "landline": _landlines, "email": _emails, "ip": _ips, "qq": _keyword_ids(_QQ_RE),
    "wechat": _keyword_ids(_WECHAT_RE),
}


# Cheap tests rule a type out before its regex scans the text (most texts hold no PII): every
# checksummed type and a QQ number need four digits in a row; IPv4 a digit, a dot and a digit;
# IPv6 "::" or seven colons; e-mail "@"; a WeChat or QQ id its keyword (substring tests are
# several times faster than a regex scan).
_FOUR_DIGITS = re.compile(r"\d{4}")
_IPV4_HINT = re.compile(r"\d\.\d")
_DIGIT_HINT = re.compile(r"\d(?:\d\d\d|\.\d)")       # either of the two above: one scan for most texts


def _maybe_wechat(text: str) -> bool:
    """False when ``_WECHAT_RE`` cannot match: each of its keywords has 信, w or v (any case)."""
    return "信" in text or "w" in text or "v" in text or "W" in text or "V" in text


def _maybe_qq(text: str) -> bool:
    return "q" in text or "Q" in text or "扣扣" in text or "企鹅" in text


def _possible(text: str, types: tuple[str, ...]) -> tuple[str, ...]:
    """The types of ``types`` whose cheap test passes, in ``PRIORITY`` order."""
    hint = _DIGIT_HINT.search(text) is not None
    wechat = _maybe_wechat(text)
    ipv6 = "::" in text or text.count(":") >= 7
    if not hint and not wechat and not ipv6 and "@" not in text:
        return ()
    digits = hint and _FOUR_DIGITS.search(text) is not None
    ok = {
        "id_card": digits, "credit_code": digits, "bank_card": digits, "mobile": digits, "landline": digits,
        "qq": digits and _maybe_qq(text), "wechat": wechat, "email": "@" in text,
        "ip": ipv6 or (hint and _IPV4_HINT.search(text) is not None),
    }
    return tuple(t for t in PRIORITY if t in types and ok[t])


def find(text: str, types: tuple[str, ...] = TYPES) -> list[Span]:
    """Non-overlapping PII spans, sorted; on overlap the type earlier in ``PRIORITY`` wins."""
    spans: list[Span] = []
    taken = []
    for kind in _possible(text, types):
        for start, end in _DETECTORS[kind](text):
            if any(s < end and start < e for s, e in taken):
                continue
            taken.append((start, end))
            spans.append(Span(start, end, kind))
    return sorted(spans)


class PiiMasker:
    """The ``pii:`` section applied to one text: (new text, counts per type, reject reason or None)."""

    def __init__(self, cfg: "PiiConfig | dict | None" = None):
        c = section(PiiConfig, cfg)
        self.enabled = c.enabled
        self.actions = {t: getattr(c, t) for t in TYPES}
        self.types = tuple(t for t in TYPES if self.actions[t] != "keep")
        self.masks = {t: c.mask_format.format(type=t) for t in TYPES}

    def __call__(self, text: str) -> tuple[str, dict[str, int], Optional[str]]:
        if not self.enabled or not self.types:
            return text, {}, None
        spans = find(text, self.types)
        if not spans:
            return text, {}, None
        counts: dict[str, int] = {}
        for s in spans:
            counts[s.type] = counts.get(s.type, 0) + 1
        rejected = next((t for t in TYPES if t in counts and self.actions[t] == "reject"), None)
        if rejected:
            return text, counts, f"pii_{rejected}"
        out, last = [], 0
        for s in spans:
            out.append(text[last:s.start])
            out.append(self.masks[s.type])
            last = s.end
        out.append(text[last:])
        return "".join(out), counts, None
