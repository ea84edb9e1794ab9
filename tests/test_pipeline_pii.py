"""PII detection: checksums, context, masking policy, and the generated benchmark's goal."""
import sys

import pytest

from pipeline import pii
from pipeline.config import REPO_CONFIG

sys.path.insert(0, str(REPO_CONFIG.parent.parent / "bench"))


def test_checksums():
    assert pii.valid_id_card("11010519491231002X") and pii.valid_id_card("11010519491231002x")
    assert not pii.valid_id_card("110105194912310021")    # wrong check digit
    assert not pii.valid_id_card("990105194912310021")    # no such province
    assert not pii.valid_id_card("110105194913310029")    # month 13
    assert pii.luhn_ok("4111111111111111") and not pii.luhn_ok("4111111111111112")
    assert pii.valid_credit_code("91370303MA3PU45B19")   # from a business licence in chid
    assert not pii.valid_credit_code("91370303MA3PU45B18")
    assert pii.org_check_char("MA3PU45B") == "1"


@pytest.mark.parametrize("text, kind, value", [
    ("身份证号：11010519491231002X，请核对", "id_card", "11010519491231002X"),
    ("卡号 6222 0202 0000 0000 006，户名张三", "bank_card", "6222 0202 0000 0000 006"),
    ("转账至3568000000000008，户名张三", "bank_card", "3568000000000008"),   # JCB: needs the keyword
    ("联系电话：+86 138-1234-5678，欢迎来电", "mobile", "+86 138-1234-5678"),
    ("咨询热线（0755）88889999转前台", "landline", "（0755）88889999"),
    ("邮箱：li.na@163.com，工作日回复", "email", "li.na@163.com"),
    ("服务器103.206.20.85拒绝访问", "ip", "103.206.20.85"),
    ("加扣扣 1234567，备注来意", "qq", "1234567"),
    ("微信：abc_2020x，备注来意", "wechat", "abc_2020x"),
    ("wx：15283248546，备注来意", "wechat", "15283248546"),
])
def test_detects_in_sentences(text, kind, value):
    spans = pii.find(text)
    assert [(s.type, text[s.start:s.end]) for s in spans] == [(kind, value)]


@pytest.mark.parametrize("text", [
    "订单号：13812345678，已发货",            # order number shaped like a mobile
    "型号：A13812345678",                     # product code
    "时间戳1617181920123",                    # ms timestamp
    "累计成交额13912345678元",                  # an amount
    "交易流水号：4178537600448095",           # Visa-shaped serial
    "编号3568000000000008",                   # JCB-shaped without a card keyword
    "| 3 | 110105194912310021 | 合格 |",      # ID-like number, wrong check digit
    "5.3.0.3版本升级公告", "版本 10.0.19041.1", "图标logo@2x.png已更新",
    "QQ音乐2021年度榜单", "02:30:45开始", "std::vector<int>",
])
def test_hard_negatives(text):
    assert pii.find(text) == []


def test_masker_policies():
    text = "张三，电话13812345678，身份证11010519491231002X。"
    masked, counts, reason = pii.PiiMasker({})(text)
    assert masked == "张三，电话<mobile>，身份证<id_card>。" and counts == {"mobile": 1, "id_card": 1} and reason is None
    _, counts, reason = pii.PiiMasker({"id_card": "reject"})(text)
    assert reason == "pii_id_card" and counts["id_card"] == 1
    kept, counts, _ = pii.PiiMasker({"mobile": "keep", "mask_format": "[{type}]"})(text)
    assert kept == "张三，电话13812345678，身份证[id_card]。" and "mobile" not in counts
    assert pii.PiiMasker({"enabled": False})(text) == (text, {}, None)


def test_generated_benchmark_meets_goal(shared_data):
    """Precision >= 0.99 and recall >= 0.98 per type on a fresh draw of the labelled set."""
    import pii_bench

    res = pii_bench.evaluate(pii_bench.build_set(seed=11, n=60))
    res.pop("_misses")
    for kind, r in res.items():
        assert r["tp"] + r["fn"] == 60
        assert r["precision"] >= 0.99 and r["recall"] >= 0.98, (kind, r)
