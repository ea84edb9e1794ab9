"""Token shards, the global sample order, mixing and the token loader, in-process (no Beam, no engine)."""
import json

import numpy as np
import pytest
import torch

from pretrain.data import Order, TrainData, interleave, plans, read_shard, start_state
from pretrain.token_shards import Encoded, TokenShard, TokenShardError, TextEncoder, dtype_for, shard_bytes


def write(path, kind, records, vocab=50000):
    path.write_bytes(shard_bytes(kind, records, dtype_for(vocab)))
    return TokenShard(path)


def test_a_token_shard_reads_back_every_kind(tmp_path):
    docs = write(tmp_path / "d.tok", "docs", [Encoded([[1, 2, 3, 9]], [[1, 0, 1, 1]]), Encoded([[4, 9]], [[1, 1]]),
                                              Encoded([[5, 6, 7, 8, 9]], [[1, 0, 0, 1, 1]])])
    assert docs.tokens.dtype == np.uint16 and docs.num_samples(3) == 4          # 11 tokens in rows of 3
    assert [docs.sample(k, 3)["ids"].tolist() for k in range(4)] == [[1, 2, 3], [9, 4, 9], [5, 6, 7], [8, 9]]
    assert docs.sample(2, 3)["starts"].tolist() == [1, 0, 0] and docs.document(1) == [[4, 9]]
    pairs = write(tmp_path / "p.tok", "pairs", [Encoded([[1, 2], [3]]), Encoded([[70000], []])], vocab=70001)
    assert pairs.tokens.dtype == np.uint32 and len(pairs) == 2
    assert pairs.sample(1)["source_ids"].tolist() == [70000] and pairs.sample(1)["target_ids"].tolist() == []
    assert pairs.first_segment_lengths().tolist() == [2, 1] and docs.first_segment_lengths() is None
    sents = write(tmp_path / "s.tok", "sentences", [Encoded([[1], [2, 3], [4]]), Encoded([[5], [6]], flag=1)])
    assert [x.tolist() for x in sents.sample(0)["sentence_ids"]] == [[1], [2, 3], [4]]
    assert (sents.sample(0)["labeled"], sents.sample(1)["labeled"]) == (False, True)
    (tmp_path / "cut.tok").write_bytes((tmp_path / "s.tok").read_bytes()[:-8])
    with pytest.raises(TokenShardError, match=r"cut\.tok: damaged token shard \(array .* past the end"):
        TokenShard(tmp_path / "cut.tok")


def test_mixing_keeps_the_weights_at_every_point_and_resumes_from_counts():
    rng = np.random.default_rng(0)
    for weights in [[3.0, 1.0, 0.5], *(rng.uniform(0.05, 5, rng.integers(2, 6)) for _ in range(50))]:
        src, _ = interleave([0] * len(weights), weights, 900)
        counts = np.cumsum(np.eye(len(weights))[src], axis=0)
        ideal = np.arange(1, 901)[:, None] * np.asarray(weights) / sum(weights)
        assert np.abs(counts - ideal).max() < 1.2                   # within about one sample at every point
    weights = [3.0, 1.0, 0.5]
    src, idx = interleave([0, 0, 0], weights, 900)
    for s in range(3):                                  # each source's samples are its next indices, in order
        assert idx[src == s].tolist() == list(range((src == s).sum()))
    head_src, head_idx = interleave([0, 0, 0], weights, 400)
    counts = np.bincount(head_src, minlength=3).tolist()
    tail_src, tail_idx = interleave(counts, weights, 500)
    assert np.concatenate([head_src, tail_src]).tolist() == src.tolist()
    assert np.concatenate([head_idx, tail_idx]).tolist() == idx.tolist()


def take(state, world, micro, n):
    """The next n global micro-batches of every rank: [(position, index)], and the state after them."""
    out = []
    for rank in range(world):
        it = plans([1.0], state, world, rank, micro, seed=5)
        for _ in range(n):
            p = next(it)
            out += [(p.first + j, i) for j, i in enumerate(p.indices)]
    return out, p.after


def test_each_sample_once_per_epoch_when_the_number_of_processes_changes():
    order = Order([7, 5, 9], seed=3)                                 # 21 samples in 3 shards
    first, state = take(start_state(1), world=2, micro=3, n=2)       # 12 samples on 2 ranks
    second, state = take(state, world=1, micro=3, n=4)               # 12 more on 1 rank
    third, _ = take(state, world=3, micro=1, n=6)                    # and 18 on 3 ranks
    seen = sorted(first + second + third)
    assert [pos for pos, _ in seen] == list(range(42))               # no position skipped or repeated
    samples = list(zip(*(a.tolist() for a in order.locate([i for _, i in seen]))))
    assert sorted(samples[:21]) == sorted(samples[21:]) == [(s, k) for s, n in enumerate([7, 5, 9]) for k in range(n)]
    assert samples[:21] != samples[21:]                              # each epoch shuffled anew
    assert samples[:21] != sorted(samples[:21])


def test_length_grouping_sorts_each_window_and_still_gives_each_sample_once_per_epoch():
    sizes = [7, 5, 9]
    lengths = [np.random.default_rng(s).integers(1, 100, n) for s, n in enumerate(sizes)]
    plain = Order(sizes, seed=3)
    grouped = Order(sizes, seed=3, group=4, lengths=lambda shard: lengths[shard])
    for epoch in range(2):
        index = np.arange(epoch * 21, (epoch + 1) * 21)
        shard, local = grouped.locate(index)
        assert sorted(zip(shard.tolist(), local.tolist())) == [(s, k) for s, n in enumerate(sizes) for k in range(n)]
        pshard, plocal = plain.locate(index)
        assert shard.tolist() == pshard.tolist()                        # shards in the same order
        for s in dict.fromkeys(shard.tolist()):                         # each shard's windows of 4
            mine, theirs = local[shard == s], plocal[pshard == s]
            for w in range(0, len(mine), 4):
                got = lengths[s][mine[w:w + 4]]
                assert (np.diff(got) <= 0).all()                        # longest first
                assert sorted(mine[w:w + 4].tolist()) == sorted(theirs[w:w + 4].tolist())   # only reordered
    again = Order(sizes, seed=3, group=4, lengths=lambda shard: lengths[shard])
    assert [a.tolist() for a in again.locate(np.arange(42))] == [a.tolist() for a in grouped.locate(np.arange(42))]


def test_length_grouped_pairs_pad_less_in_the_trainers_batches(tiny_data, tmp_path):
    """T5 pairs read by TrainData with data.length_group: the same pairs, far less padding."""
    import gzip

    from pipeline.pairs import make_pair
    from pretrain.config import config_path, load_config
    from conftest import sample_records

    pairs = [p for p in (make_pair(r) for r in sample_records()) if isinstance(p, dict)]
    n = (len(pairs) - 8) // 16 * 16                                     # one epoch of whole micro-batches
    folder = tmp_path / "pairs"
    for split, part in (("train", pairs[:n]), ("valid", pairs[-8:])):
        (folder / split).mkdir(parents=True)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
        (folder / split / "shard-00000-of-00001.jsonl.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
    (folder / "manifest.json").write_text(json.dumps({"shards": [
        {"path": f"{s}/shard-00000-of-00001.jsonl.gz", "split": s, "documents": k}
        for s, k in (("train", n), ("valid", 8))]}), encoding="utf-8")
    waste, ids = {}, {}
    for group in (0, 256):
        cfg = load_config(config_path("t5-pegasus"), [*tiny_data, f"data.pairs_dir={folder}", "data.tokens=false",
                                                     f"data.length_group={group}", "train.packing=false"])
        objective = cfg.objective_class(cfg)
        got = batches(TrainData(cfg, objective, rank=0, world=1), n // 16)
        tokens = sum(objective.tokens_in(b) for b, _ in got)
        waste[group] = 1 - tokens / sum(b["input_ids"].numel() + b["labels"].numel() for b, _ in got)
        ids[group] = sorted(i for _, m in got for i in m.ids)
    assert ids[0] == ids[256]                                           # the same pairs, in another order
    assert waste[256] < waste[0] / 2, waste                             # measured: 20.3 % -> 5.9 %


# ---------------------------------------------------------------- the objectives' token path
def token_folder(tiny_data, tmp_path, model, *extra):
    """Token shards of the tiny corpus for `model`, written by the stage's own per-shard function
    (with tokenizers' engine: the bulk one compiles its model in ~10 s; the slow tier runs it)."""
    from pipeline.pairs import input_shards
    from pretrain.config import config_path, load_config
    from pretrain.token_stage import token_shard, write_summary

    out = tmp_path / f"tokens-{model}"
    cfg = load_config(config_path(model), [*tiny_data, "data.tokens=true", f"data.tokens_dir={out}",
                                           "data.loader_workers=0", *extra])
    objective = cfg.objective_class(cfg)
    encoder, dtype = TextEncoder(cfg.tokenizer.dir, bulk=False), dtype_for(len(objective.tokenizer))
    events = [e for sh in input_shards(objective.train_dir) for e in token_shard(sh, objective, encoder, dtype, str(out))]
    stats = next(write_summary((None, events), str(out)))
    return cfg, objective, stats


def test_token_shards_hold_the_tokenizers_ids(tiny_data, tmp_path):
    from pretrain.objectives.roformer_sim import sentences_of

    for model in ("electra", "roformer-sim"):
        cfg, objective, stats = token_folder(tiny_data, tmp_path, model)
        tok, manifest = objective.tokenizer, json.loads((tmp_path / f"tokens-{model}" / "manifest.json").read_text())
        assert stats["read"] == stats["written"] == sum(e["documents"] for e in manifest["shards"]) > 0
        for entry in manifest["shards"]:
            shard = TokenShard(tmp_path / f"tokens-{model}" / entry["path"])
            records = read_shard(f"{cfg.data.clean_dir}/{entry['path']}".replace(".tok", ".jsonl.gz"))
            assert len(shard) == len(records) and len(shard.tokens) == entry["tokens"]
            for k, record in enumerate(records):
                texts = sentences_of(record["text"], cfg.objective) if model == "roformer-sim" else [record["text"]]
                want = [ids + ([tok.sep_token_id] if model == "electra" else [])
                        for ids in tok(texts, add_special_tokens=False)["input_ids"]]
                assert shard.document(k) == want, record["id"]


@pytest.mark.parametrize("folder", ["vocab.txt", pytest.param("t5-pegasus", marks=pytest.mark.slow)])
def test_token_shards_of_a_folder_without_tokenizer_json_hold_its_ids(tiny_data, tmp_path, folder):
    """A BERT checkpoint's vocab.txt alone, or tokenizer.recipe=t5-pegasus (jieba_wordpiece.json): the
    token stage encodes with the tokenizer the on-the-fly path loads (it used to stop on the missing
    tokenizer.json). The jieba recipe loads jieba's whole dictionary (~7 s): slow tier."""
    from collections import Counter

    from conftest import sample_records
    from tokenizer.released import build_released_tokenizer

    texts = [r["text"] for r in sample_records()]
    chars = [c for c, _ in Counter("".join(texts)).most_common(1500) if not c.isspace()]
    words = ["我们", "今天", "中国", "一个", "没有", "可以", "时候", "自己", "什么", "这个"]
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *chars,
                                                 *(f"##{c}" for c in chars[:300])]) + "\n", encoding="utf-8")
    if folder == "vocab.txt":
        (tok_dir / "vocab.txt").write_bytes((tmp_path / "vocab.txt").read_bytes())
    else:
        build_released_tokenizer(tmp_path / "vocab.txt", folder, tok_dir)
    assert not (tok_dir / "tokenizer.json").exists()
    cfg, objective, stats = token_folder(tiny_data, tmp_path, "electra", f"tokenizer.dir={tok_dir}")
    tok = objective.tokenizer
    assert stats["written"] > 0 and (type(tok).__name__ == "JiebaBertTokenizer") == (folder != "vocab.txt")
    manifest = json.loads((tmp_path / "tokens-electra" / "manifest.json").read_text())
    seen = set()
    for entry in manifest["shards"]:
        shard = TokenShard(tmp_path / "tokens-electra" / entry["path"])
        records = read_shard(f"{cfg.data.clean_dir}/{entry['path']}".replace(".tok", ".jsonl.gz"))
        for k, record in enumerate(records):
            assert shard.document(k) == [tok(record["text"], add_special_tokens=False)["input_ids"] + [tok.sep_token_id]]
            seen.update(tok.convert_ids_to_tokens(shard.document(k)[0]))
    assert len(seen) > 500 and (bool(seen & set(words)) == (folder != "vocab.txt"))     # jieba keeps whole words


def test_pairs_from_tokens_collate_exactly_as_from_text(tiny_data, tmp_path):
    from pipeline.pairs import make_pair
    from pretrain.config import config_path, load_config
    from conftest import sample_records

    cfg = load_config(config_path("t5-pegasus"), [*tiny_data, "train.max_source_len=48", "train.max_target_len=12"])
    objective = cfg.objective_class(cfg)
    records = [p for p in (make_pair(r) for r in sample_records()) if isinstance(p, dict)][:24]
    encoded = objective.encode_records(records, TextEncoder(cfg.tokenizer.dir, bulk=False))
    samples = [{"source_ids": np.asarray(e.segments[0]), "target_ids": np.asarray(e.segments[1])} for e in encoded]
    a, b = objective.collate(records), objective.collate_tokens(samples, seed=0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model", ["mlm-proposal", "bert-wwm"])
def test_token_windows_are_the_documents_in_order_and_attend_only_themselves(tiny_data, tmp_path, model):
    """A row is [CLS] + the next window of the shard's documents joined by [SEP]; units are the
    word (or token) starts; with train.packing each document is its own segment with positions
    from 0, as on the text path (pack_rows)."""
    cfg, objective, _ = token_folder(tiny_data, tmp_path, model, "train.max_source_len=40")
    tok = objective.tokenizer
    records = read_shard(f"{cfg.data.clean_dir}/train/shard-00000-of-00001.jsonl.gz")[:30]
    enc = tok([r["text"] for r in records], add_special_tokens=False, return_offsets_mapping=True)
    stream = [t for ids in enc["input_ids"] for t in [*ids, tok.sep_token_id]]
    shard = TokenShard(tmp_path / f"tokens-{model}" / "train" / "shard-00000-of-00001.tok")
    width = objective.window()
    n = len(stream) // width
    batch = objective.collate_tokens([shard.sample(k, width) for k in range(n)], seed=0)
    ids, seg, pos = batch["input_ids"], batch["segment_ids"], batch["position_ids"]
    assert (ids[:, 0] == tok.cls_token_id).all() and ids[:, 1:].flatten().tolist() == stream[:n * width]
    units = batch["unit_ids"]
    special = (ids == tok.cls_token_id) | (ids == tok.sep_token_id)
    assert ((units < 0) == special).all()
    for row in units:                                   # units 0, 1, ... in order, each start once
        kept = row[row >= 0]
        assert kept[0] == 0 and ((kept.diff() == 0) | (kept.diff() == 1)).all()
    if not cfg.objective.whole_word:
        assert (units[~special] >= 0).all() and all((r[r >= 0].diff() == 1).all() for r in units)
    after_sep = torch.zeros_like(special)
    after_sep[:, 1:] = ids[:, :-1] == tok.sep_token_id
    assert (pos[after_sep] == 0).all() and (pos[:, 0] == 0).all()
    assert ((seg[:, 1:] != seg[:, :-1]) == after_sep[:, 1:]).all()     # a new segment exactly after [SEP]



def batches(data, n):
    it = iter(data)
    return [next(it) for _ in range(n)]


def same_batches(a, b):
    return all(x[1] == y[1] and x[0].keys() == y[0].keys() and all(torch.equal(x[0][k], y[0][k]) for k in x[0])
               for x, y in zip(a, b))


def test_background_workers_give_the_batches_the_trainer_would_make(tiny_data, tmp_path):
    cfg, objective, _ = token_folder(tiny_data, tmp_path, "electra", "train.micro_batch_size=4")
    inline = batches(TrainData(cfg, objective, rank=1, world=2), 5)
    cfg.data.loader_workers = 2
    background = batches(TrainData(cfg, objective, rank=1, world=2), 5)
    assert same_batches(inline, background)
    assert [m.first for _, m in inline] == [4, 12, 20, 28, 36]          # rank 1's slices of 2 x 4
    assert all(int(b["mlm_mask"].sum()) > 0 for b, _ in inline)            # masked, from the position's seed
    resumed = TrainData(cfg, objective, rank=1, world=2, state=inline[2][1].after)
    assert same_batches(batches(resumed, 2), background[3:])               # the position resumes exactly


def test_mixed_sources_are_drawn_by_weight_with_epochs_per_source(tiny_data, tmp_path):
    cfg, objective, _ = token_folder(tiny_data, tmp_path, "electra", "train.micro_batch_size=5")
    folder = cfg.data.tokens_dir
    cfg.data.mix = [type("M", (), {"path": "x", "weight": w, "name": n, "pairs_dir": "", "tokens_dir": folder})()
                    for n, w in (("big", 3.0), ("small", 1.0))]
    data = TrainData(cfg, objective, rank=0, world=1)
    n = data.orders[0].total
    drawn = [i for _, meta in batches(data, 2 * n // 5 + 1) for i in meta.ids]
    big, small = [i for i in drawn if i.startswith("big:")], [i for i in drawn if i.startswith("small:")]
    assert abs(len(big) - 3 * len(small)) <= 3
    assert len(big) > n and len(set(big[:n])) == n and set(big[n:]) <= set(big[:n])   # a second epoch of big
    assert len(set(small)) == len(small)                                                # small still in its first
    assert data.epochs()["big"] == pytest.approx(len(big) / n)


def test_span_corruption_puts_every_token_back_in_place():
    import random

    from pretrain.objectives.t5_span import corrupt, noise_mask

    rng = random.Random(0)
    for length in [0, 1, 2, 7, 50, 191]:
        ids = [rng.randrange(100, 900) for _ in range(length)]
        mask = noise_mask(length, 0.15, 3.0, rng)
        assert mask.sum() == (min(max(1, round(length * 0.15)), length - 1) if length >= 2 else 0)
        inputs, target = corrupt(ids, mask, sentinels=list(range(1, 60)))
        spans, k = {}, None                                    # the target: sentinel, span, sentinel, span ...
        for t in target:
            k = t if t < 100 else k
            spans.setdefault(k, []).extend([] if t < 100 else [t])
        rebuilt = [t for x in inputs for t in (spans[x] if x < 100 else [x])]
        assert rebuilt == ids and len(set(spans)) == sum(1 for x in inputs if x < 100)


def test_the_token_stage_writes_the_tokenizers_ids(t5_tokens):
    """The real stage (Beam, bulk encoder) on T5-PEGASUS pairs: every record's source and target ids
    are the tokenizer's, except where two segmentations tie (tokenizer.bulk's documented difference)."""
    from pathlib import Path

    from pretrain.config import config_path, load_config
    from tokenizer.agreement import bulk_vs_tokenizer_json

    cfg = load_config(config_path("t5-pegasus"), t5_tokens)
    tok = cfg.objective_class(cfg).tokenizer
    folder = Path(cfg.data.tokens_dir)
    manifest, stats = (json.loads((folder / f).read_text()) for f in ("manifest.json", "stats.json"))
    assert stats["engine"] == ["bulk"] and stats["read"] == stats["written"] + sum(stats["rejected"].values())
    differ, checked = [], 0
    for entry in manifest["shards"]:
        shard = TokenShard(folder / entry["path"])
        records = read_shard(f"{cfg.data.pairs_dir}/{entry['path']}".replace(".tok", ".jsonl.gz"))
        assert len(shard) == len(records) == entry["documents"] and len(shard.tokens) == entry["tokens"]
        for k, record in enumerate(records):
            want = tok([record["source"], record["target"]], add_special_tokens=False)["input_ids"]
            differ += [t for t, a, b in zip((record["source"], record["target"]), shard.document(k), want) if a != b]
            checked += 2
    ties = bulk_vs_tokenizer_json(cfg.tokenizer.dir, differ)
    assert checked > 300 and len(differ) <= checked // 50
    assert ties["identical_documents"] == 0 and ties["same_text_when_different"] and ties["largest_score_gap"] < 1e-3
