"""PII detection benchmark: a labelled set generated with a fixed seed, precision/recall per type.

    python bench/pii_bench.py [--seed 0] [--n 400] [--dump set.jsonl]

Positives (valid checksums, real-looking formats: separators, +86, parentheses, extensions,
keywords or none) are inserted at clause boundaries of real sentences from
``$ZH_SHARED_DATA/corpus`` (THUCNews, C3, reviews). Hard negatives go into the same kind of
sentences: order and waybill numbers, timestamps (s/ms, compact dates), phone-like product codes
and SKUs, bank numbers failing Luhn, ID numbers with a wrong check digit or date, ID-like numbers
in table rows, version strings, image names with @2x, amounts. A detection counts as correct
when type, start and end match the inserted span exactly.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import pii  # noqa: E402

SHARED = Path(os.environ.get("ZH_SHARED_DATA", ROOT.parent / "shared" / "data"))
REGIONS = ["110101", "110105", "120101", "130102", "310104", "310115", "320102", "330106", "340104", "350203",
           "370202", "410105", "420106", "430104", "440106", "440305", "450103", "500103", "510107", "530102",
           "610113", "620102", "650102", "210202", "220104", "230103", "360102", "460105", "520102", "640104"]
AREA3 = ["010", "020", "021", "022", "023", "024", "025", "027", "028", "029"]
AREA4 = ["0311", "0351", "0371", "0411", "0431", "0451", "0512", "0531", "0571", "0591", "0731", "0755",
         "0769", "0851", "0871", "0898", "0931", "0991"]
MOBILE3 = ["130", "131", "132", "133", "135", "136", "137", "138", "139", "147", "150", "151", "152", "153",
           "155", "156", "157", "158", "159", "166", "170", "173", "175", "176", "177", "178", "180", "181",
           "182", "183", "185", "186", "187", "188", "189", "191", "193", "195", "198", "199"]
NAMES = ["zhangwei", "li.na", "wang_fang", "liuyang88", "chen.jing", "yang-lei", "zhao_min", "huangqiang", "zhou.jie"]
DOMAINS = ["qq.com", "163.com", "126.com", "sina.com", "gmail.com", "foxmail.com", "pku.edu.cn", "company.com.cn",
           "example.org"]


def real_sentences(limit: int = 4000) -> list[str]:
    """Clause-rich real sentences (15-120 characters) from the shared corpora."""
    out: list[str] = []
    corpus = SHARED / "corpus"
    with (corpus / "thucnews_cnews_subset/cnews.val.txt").open(encoding="utf-8") as f:
        for line in f:
            out += [s + "。" for s in line.split("\t", 1)[1].split("。") if 15 <= len(s) <= 120 and "，" in s]
    for doc in json.loads((corpus / "c3/c3-m-train.json").read_text(encoding="utf-8")):
        out += [s + "。" for p in doc[0] for s in p.split("。") if 15 <= len(s) <= 120 and "，" in s]
    with (corpus / "sophonplus_reviews/ChnSentiCorp_htl_all.csv").open(encoding="utf-8") as f:
        out += [r["review"] for r in csv.DictReader(f) if 15 <= len(r["review"] or "") <= 120 and "，" in r["review"]]
    # digits in the carrier sentence would be unlabelled numbers: keep sentences without them
    out = [s for s in out if not any(c.isdigit() for c in s)]
    random.Random(0).shuffle(out)
    return out[:limit]


# --------------------------------------------------------------------------
# Positive generators: (text with context, start, end of the PII inside it)
# --------------------------------------------------------------------------

def _digits(rng, n):
    return "".join(rng.choice("0123456789") for _ in range(n))


def gen_id_card(rng, valid=True):
    born = rng.randint(-20000, 15000)
    import datetime
    d = datetime.date(1970, 1, 1) + datetime.timedelta(days=born)
    first17 = rng.choice(REGIONS) + d.strftime("%Y%m%d") + _digits(rng, 3)
    check = pii.id_check_char(first17)
    if not valid:
        check = rng.choice([c for c in "0123456789X" if c != check])
    number = first17 + check
    if check == "X" and rng.random() < 0.3:
        number = number[:-1] + "x"
    return number


def luhn_complete(prefix_and_body: str) -> str:
    for d in "0123456789":
        if pii.luhn_ok(prefix_and_body + d):
            return prefix_and_body + d
    raise AssertionError


def gen_bank_card(rng, valid=True):
    kind = rng.random()
    if kind < 0.6:
        n = rng.choice([16, 19])
        body = rng.choice(["622202", "622848", "621700", "622588", "622700", "623058", "621483"]) + _digits(rng, n - 7)
    elif kind < 0.8:
        n, body = 16, "4" + _digits(rng, 14)
    else:
        n, body = 16, rng.choice("12345") and "5" + rng.choice("12345") + _digits(rng, 13)
    number = luhn_complete(body)
    if not valid:
        last = int(number[-1])
        number = number[:-1] + str((last + rng.randint(1, 9)) % 10)
    fmt = rng.random()
    if fmt < 0.5:
        return number
    sep = " " if fmt < 0.8 else "-"
    return sep.join(number[i:i + 4] for i in range(0, len(number), 4))


def gen_mobile(rng):
    number = rng.choice(MOBILE3) + _digits(rng, 8)
    fmt = rng.random()
    if fmt < 0.45:
        return number
    if fmt < 0.65:
        return f"{number[:3]}-{number[3:7]}-{number[7:]}"
    if fmt < 0.8:
        return f"{number[:3]} {number[3:7]} {number[7:]}"
    if fmt < 0.92:
        return f"+86 {number}"
    return f"+86-{number[:3]}-{number[3:7]}-{number[7:]}"


def gen_landline(rng):
    if rng.random() < 0.5:
        code, local = rng.choice(AREA3), rng.choice("2345678") + _digits(rng, 7)
    else:
        code, local = rng.choice(AREA4), rng.choice("2345678") + _digits(rng, rng.choice([6, 7]))
    fmt = rng.random()
    s = f"({code}){local}" if fmt < 0.25 else f"（{code}）{local}" if fmt < 0.35 else f"{code}-{local}"
    if rng.random() < 0.15:
        s += "-" + _digits(rng, rng.randint(2, 4))
    return s


def gen_credit_code(rng, valid=True):
    alphabet = pii._USCC_ALPHABET
    head = rng.choice(["91", "92", "93", "11", "12", "51", "52", "Y1"]) + rng.choice(REGIONS)
    org8 = "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY" if rng.random() < 0.2 else "0123456789") for _ in range(8))
    org = org8 + pii.org_check_char(org8)
    if org[-1] not in pii._USCC_VALUE:   # X is allowed in both alphabets; keep the draw simple
        return gen_credit_code(rng, valid)
    first17 = head + org
    check = pii.uscc_check_char(first17)
    if not valid:
        check = rng.choice([c for c in alphabet if c != check])
    return first17 + check


def gen_email(rng):
    return f"{rng.choice(NAMES)}{rng.randint(1, 999) if rng.random() < 0.5 else ''}@{rng.choice(DOMAINS)}"


def gen_ip(rng):
    if rng.random() < 0.75:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    groups = [f"{rng.randint(0, 65535):x}" for _ in range(8)]
    if rng.random() < 0.5:
        return ":".join(groups)
    return f"{groups[0]}:{groups[1]}::{groups[7]}"


def gen_qq(rng):
    return str(rng.randint(10000, 3999999999))


def gen_wechat(rng):
    if rng.random() < 0.2:
        return rng.choice(MOBILE3) + _digits(rng, 8)
    first = rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return first + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789_-") for _ in range(rng.randint(5, 14)))


# (generator, contexts: "{}" is the PII; the None context = no keyword at all)
POSITIVES = {
    "id_card": (gen_id_card, ["身份证号：{}", "身份证号码为{}", "证件号{}", "{}", "持身份证（{}）"]),
    "bank_card": (gen_bank_card, ["银行卡号：{}", "请转账至{}", "卡号 {}", "收款账号：{}", "{}"]),
    "mobile": (gen_mobile, ["联系电话：{}", "手机{}", "请拨打{}", "{}", "电话 {}"]),
    "landline": (gen_landline, ["电话：{}", "咨询热线{}", "座机：{}", "{}", "传真 {}"]),
    "credit_code": (gen_credit_code, ["统一社会信用代码：{}", "信用代码{}", "{}"]),
    "email": (gen_email, ["邮箱：{}", "请发送简历至{}", "E-mail: {}", "{}"]),
    "ip": (gen_ip, ["IP地址：{}", "服务器{}", "来自{}的访问", "{}"]),
    "qq": (gen_qq, ["QQ：{}", "QQ号{}", "加扣扣 {}", "QQ群：{}"]),
    "wechat": (gen_wechat, ["微信：{}", "微信号 {}", "加VX：{}", "wx：{}"]),
}


def hard_negatives(rng):
    """(type the negative imitates, text): none of these is personal information."""
    d = lambda n: _digits(rng, n)  # noqa: E731
    out = [
        ("bank_card", f"订单号：{luhn_complete('6222' + d(14))}"),
        ("bank_card", f"快递单号{d(1 or 1) and '7' + d(14)}"),
        ("bank_card", f"运单号：{rng.choice(['SF', 'YT', 'JD'])}{d(13)}"),
        ("bank_card", gen_bank_card(rng, valid=False)),
        ("bank_card", f"交易流水号：{luhn_complete('4' + d(14))}"),
        ("bank_card", f"{rng.randint(2019, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{d(10)}"),
        ("id_card", gen_id_card(rng, valid=False)),
        ("id_card", f"| {rng.randint(1, 99)} | {rng.choice(REGIONS)}{rng.randint(1950, 2005)}{rng.randint(13, 19)}{d(6)} | 合格 |"),
        ("id_card", f"编号：{gen_id_card(rng)}"),
        ("id_card", f"| {d(18)} | {d(6)} |"),
        ("mobile", f"时间戳{rng.randint(1_500_000_000_000, 1_700_000_000_000)}"),
        ("mobile", f"ts={rng.randint(1_500_000_000, 1_700_000_000)}"),
        ("mobile", f"型号：A{rng.choice(MOBILE3)}{d(8)}"),
        ("mobile", f"货号：{rng.choice(MOBILE3)}{d(8)}"),
        ("mobile", f"SKU {rng.choice(MOBILE3)}{d(8)}"),
        ("mobile", f"产品编码{rng.choice(MOBILE3)}{d(8)}X"),
        ("mobile", f"累计成交额{rng.choice(MOBILE3)}{d(8)}元"),
        ("mobile", f"{rng.choice(['120', '110', '121', '100', '104'])}{d(8)}"),
        ("mobile", f"{rng.choice(MOBILE3)}{d(9)}"),
        ("mobile", f"{rng.randint(2019, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"),
        ("landline", f"{rng.randint(2019, 2024)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{d(4)}"),
        ("landline", f"0{d(10)}"),
        ("landline", f"第0{rng.randint(1, 9)}-{d(8)}号文件"),
        ("credit_code", gen_credit_code(rng, valid=False)),
        ("credit_code", f"序列号：{gen_credit_code(rng)}"),
        ("credit_code", f"{''.join(rng.choice('ABCDEFGHJKLMNPQRTUWXY0123456789') for _ in range(18))}"),
        ("email", "图标文件logo@2x.png已更新"),
        ("email", f"@{rng.choice(NAMES)} 你好"),
        ("email", f"价格{rng.randint(1, 99)}元@{rng.randint(1, 9)}件"),
        ("ip", f"版本 {rng.randint(1, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 999)}"),
        ("ip", f"v{rng.randint(1, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}"),
        ("ip", f"{rng.randint(300, 999)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}"),
        ("ip", f"{rng.randint(2000, 2024)}.{rng.randint(1, 12)}.{rng.randint(1, 28)}"),
        ("ip", f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"),
        ("ip", "std::vector"),
        ("qq", f"QQ音乐{rng.randint(2010, 2024)}年度榜单"),
        ("qq", f"QQ飞车{rng.randint(10000, 99999)}分"),
        ("wechat", "微信支付"),
        ("wechat", f"微信公众号{rng.randint(2010, 2024)}年"),
    ]
    return out


def insert(rng, sentence: str, piece: str) -> tuple[str, int]:
    """Put ``piece`` after a random clause of ``sentence``; return text and the piece's offset."""
    cuts = [i + 1 for i, c in enumerate(sentence) if c in "，。；"] or [len(sentence)]
    cut = rng.choice(cuts)
    text = sentence[:cut] + piece + "，" + sentence[cut:]
    return text, cut


def build_set(seed: int = 0, n: int = 400) -> list[dict]:
    """n positives per type and n // 4 draws of every hard-negative family, in real sentences."""
    rng = random.Random(seed)
    sentences = real_sentences()
    items = []
    for kind, (gen, contexts) in POSITIVES.items():
        for _ in range(n):
            value = gen(rng)
            context = rng.choice(contexts)
            piece = context.format(value)
            text, at = insert(rng, rng.choice(sentences), piece)
            start = at + context.index("{}")
            items.append({"text": text, "spans": [[start, start + len(value), kind]], "family": kind})
    for _ in range(max(1, n // 4)):
        for kind, piece in hard_negatives(rng):
            text, _ = insert(rng, rng.choice(sentences), piece)
            items.append({"text": text, "spans": [], "family": f"negative:{kind}"})
    return items


def evaluate(items: list[dict]) -> dict[str, dict]:
    """Per type: tp, fp, fn, precision, recall (exact span and type)."""
    res = {t: {"tp": 0, "fp": 0, "fn": 0} for t in pii.TYPES}
    misses = []
    for item in items:
        gold = {tuple(s) for s in item["spans"]}
        pred = {(s.start, s.end, s.type) for s in pii.find(item["text"])}
        for s in pred & gold:
            res[s[2]]["tp"] += 1
        for s in pred - gold:
            res[s[2]]["fp"] += 1
            misses.append(("fp", s[2], item["text"][s[0]:s[1]], item["text"]))
        for s in gold - pred:
            res[s[2]]["fn"] += 1
            misses.append(("fn", s[2], item["text"][s[0]:s[1]], item["text"]))
    for r in res.values():
        r["precision"] = r["tp"] / (r["tp"] + r["fp"]) if r["tp"] + r["fp"] else 1.0
        r["recall"] = r["tp"] / (r["tp"] + r["fn"]) if r["tp"] + r["fn"] else 1.0
    res["_misses"] = misses
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=400, help="positives per type")
    ap.add_argument("--dump", default=None, help="write the labelled set as JSON lines")
    ap.add_argument("--show-errors", type=int, default=0)
    args = ap.parse_args(argv)
    if not (SHARED / "corpus").is_dir():
        print(f"shared data not found under {SHARED} (set ZH_SHARED_DATA)", file=sys.stderr)
        return 2
    items = build_set(args.seed, args.n)
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(i, ensure_ascii=False) + "\n" for i in items)
    res = evaluate(items)
    misses = res.pop("_misses")
    negatives = sum(1 for i in items if not i["spans"])
    print(f"PII detection on a generated labelled set (seed {args.seed}: {args.n} positives per type in real "
          f"sentences, {negatives} hard negatives)")
    print("| type | positives | TP | FP | FN | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t, r in res.items():
        print(f"| {t} | {r['tp'] + r['fn']} | {r['tp']} | {r['fp']} | {r['fn']} | {r['precision']:.4f} | {r['recall']:.4f} |")
    for kind, t, span, text in misses[: args.show_errors]:
        print(f"{kind} {t} {span!r}: {text}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
