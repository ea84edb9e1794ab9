"""Packing without cross-attention (pretrain.packing): a packed batch gives every sequence the loss
and the gradients it gets alone in a padded batch, for each model family and attention kernel."""
import pytest
import torch
import torch.nn.functional as F

from pretrain.packing import attention_mask_4d, first_fit, pack, pack_sequences, segment_pool


def seqs(lengths, vocab=50, seed=0, low=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(low, vocab, (n,), generator=g).tolist() for n in lengths]


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a: dict, b: dict, tol=2e-5):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=tol, rtol=1e-4, msg=name)


def test_first_fit_packs_in_order_within_every_capacity():
    rows = first_fit([(5, 2), (4, 3), (3, 1), (2, 4), (6, 1)], (8, 5))
    assert rows == [[0, 2], [1], [3, 4]]
    assert first_fit([(3,), (3,), (3,)], (4,), max_rows=2) == [[0], [1]]       # the rest does not fit
    with pytest.raises(ValueError):
        first_fit([(9,)], (8,))


def _first_fit_scan(lengths, caps, max_rows=0, decreasing=False):
    """The plain definition: scan every row, in order, for each item."""
    rows, used = [], []
    order = sorted(range(len(lengths)), key=lambda i: -sum(lengths[i])) if decreasing else range(len(lengths))
    for i in order:
        for r, u in enumerate(used):
            if all(a + n <= c for a, n, c in zip(u, lengths[i], caps)):
                rows[r].append(i)
                used[r] = [a + n for a, n in zip(u, lengths[i])]
                break
        else:
            if not (max_rows and len(rows) >= max_rows):
                rows.append([i])
                used.append(list(lengths[i]))
    return rows


def test_first_fit_equals_the_plain_scan_and_pack_fills_every_token():
    import random
    rnd = random.Random(0)
    for _ in range(200):
        caps = tuple(rnd.randint(4, 30) for _ in range(rnd.choice([1, 2])))
        lengths = [tuple(rnd.randint(0, c) for c in caps) for _ in range(rnd.randint(0, 40))]
        kw = {"max_rows": rnd.choice([0, 3]), "decreasing": rnd.random() < 0.5}
        rows = first_fit(lengths, caps, **kw)
        assert rows == _first_fit_scan(lengths, caps, **kw)
        toks = [[rnd.randint(1, 99) for _ in range(n[0])] for n in lengths]
        out = pack([[toks[i] for i in r] for r in rows], 0, rows)
        for r, row in enumerate(rows):
            flat = [t for i in row for t in toks[i]]
            assert out["input_ids"][r, :len(flat)].tolist() == flat
            assert out["segment_ids"][r, :len(flat)].tolist() == [i for i in row for _ in toks[i]]
            assert out["position_ids"][r, :len(flat)].tolist() == [p for i in row for p in range(len(toks[i]))]
            assert not out["attention_mask"][r, len(flat):].any()


def test_pack_restarts_positions_and_numbers_segments():
    out = pack([[[7, 8, 9], [4, 5]], [[6]]], pad_id=0)
    assert out["input_ids"].tolist() == [[7, 8, 9, 4, 5], [6, 0, 0, 0, 0]]
    assert out["segment_ids"].tolist() == [[0, 0, 0, 1, 1], [2, -1, -1, -1, -1]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 0, 0, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_mask_is_block_diagonal_causal_and_never_empty():
    seg = torch.tensor([[0, 0, 1, 1, 1, -1]])
    m = attention_mask_4d(seg, causal=True)[0, 0]
    assert m[3].tolist() == [False, False, True, True, False, False]       # own segment, up to itself
    assert m[5].all()                                                      # a pad query attends everything
    assert not m[:5, 5].any()                                              # nobody attends a pad
    add = attention_mask_4d(seg, implementation="eager")[0, 0]
    assert add[0, 2] == torch.finfo(torch.float32).min and add[0, 1] == 0


def test_segment_pool_mean_and_first():
    states = torch.arange(12, dtype=torch.float32).view(1, 6, 2)
    seg = torch.tensor([[1, 1, 0, 0, 0, -1]])
    mean = segment_pool(states, seg, 2)
    torch.testing.assert_close(mean, torch.tensor([[6.0, 7.0], [1.0, 2.0]]))
    first = segment_pool(states, seg, 2, first=True)
    torch.testing.assert_close(first, torch.tensor([[4.0, 5.0], [0.0, 1.0]]))


# ---------------------------------------------------------------- T5
class Tok:
    pad_token_id, cls_token_id, sep_token_id, eos_token_id = 0, 2, 3, 3


def t5(impl):
    from transformers import MT5Config, MT5ForConditionalGeneration
    torch.manual_seed(0)
    cfg = MT5Config(vocab_size=50, d_model=32, d_ff=48, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
                    decoder_start_token_id=2, pad_token_id=0, eos_token_id=3, tie_word_embeddings=False, dropout_rate=0.0,
                    attn_implementation=impl, relative_attention_num_buckets=8, relative_attention_max_distance=16)
    return MT5ForConditionalGeneration(cfg)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_t5_packed_pairs_match_unpacked(impl):
    from pretrain.objectives._t5 import packed_forward, pair_batch
    src, tgt = seqs([9, 4, 12, 3, 7], seed=1), seqs([3, 5, 2, 6, 4], seed=2)
    model = t5(impl)
    plain = pair_batch(Tok, src, tgt, 16, 8, packing=False)
    packed = pair_batch(Tok, src, tgt, 16, 8, packing=True)
    assert packed["input_ids"].shape[0] < len(src) and packed["attention_mask"].sum() == plain["attention_mask"].sum()

    logits = model(**plain).logits
    ce = F.cross_entropy(logits.transpose(1, 2), plain["labels"], reduction="none", ignore_index=-100)
    per_seq = ce.sum(1) / (plain["labels"] != -100).sum(1)
    ce.sum().backward()
    g_plain = grads(model)
    model.zero_grad()

    out = packed_forward(model, packed)
    ce = F.cross_entropy(out.logits.transpose(1, 2), packed["labels"], reduction="none", ignore_index=-100)
    seg = packed["decoder_segment_ids"]
    per_packed = torch.zeros(len(src)).index_add(0, seg[seg >= 0], ce[seg >= 0])
    per_packed = per_packed / torch.bincount(seg[seg >= 0], minlength=len(src))
    torch.testing.assert_close(per_packed, per_seq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ce.sum() / (packed["labels"] != -100).sum())   # HF's mean, unchanged
    ce.sum().backward()
    assert_same_grads(grads(model), g_plain)


def test_flat_rows_and_their_layout():
    """A packed batch laid end to end without its padding, padded to a coarse length grid, and the
    rows' mask carrying where each row cell's token sits in the flat sequence."""
    from pretrain.packing import LAYOUT, flat_length, flatten_rows, with_rows
    assert [flat_length(n) for n in (1, 17, 511, 513, 1025)] == [16, 32, 512, 544, 1088]
    enc = torch.tensor([[4, 4, 4, 1, 1], [0, 0, 2, -1, -1]])
    dec = torch.tensor([[1, 4, 4, -1], [2, 0, 0, 0]])
    batch = {"segment_ids": enc, "input_ids": enc * 10, "decoder_segment_ids": dec, "labels": dec + 100}
    flat = flatten_rows(batch, {"segment_ids": ("input_ids",), "decoder_segment_ids": ("labels",)}, {"labels": -100})
    assert flat["input_ids"].tolist() == [[40, 40, 40, 10, 10, 0, 0, 20] + [0] * 8]     # 8 tokens, padded to 16
    assert flat["segment_ids"].tolist() == [[4, 4, 4, 1, 1, 0, 0, 2] + [-1] * 8]
    assert flat["labels"].tolist() == [[101, 104, 104, 102, 100, 100, 100] + [-100] * 9]
    mask = with_rows(torch.ones(2, 1, 4, 5, dtype=torch.bool), dec >= 0, enc >= 0)
    q_index, q_tokens, k_index, q_shape, k_shape = getattr(mask, LAYOUT)
    assert q_index.tolist() == [0, 1, 2, 2, 3, 4, 5, 6]         # the pad cell reads the token before it
    assert q_tokens.tolist() == [0, 1, 2, 4, 5, 6, 7]          # the row cells holding tokens, in token order
    assert k_index.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 7, 7] and (q_shape, k_shape) == ((2, 4), (2, 5))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_t5_flattened_packed_pairs_match_unpacked(checkpointing):
    """``train.flatten_packed``: the packed pairs laid end to end (what T5Objective.loss trains on with
    the trainer's CPU attention), linear layers on the tokens and attention on the rows, give every
    pair the loss and the gradients it gets alone, also with activation checkpointing."""
    from pretrain import dropout as D
    from pretrain.models import bias_by_offset, relative_bias_by_offset
    from pretrain.objectives._t5 import FLAT, FLAT_FILL, packed_forward, pair_batch
    from pretrain.packing import flatten_rows
    src, tgt = seqs([9, 4, 12, 3, 7, 15, 2], seed=1), seqs([3, 5, 2, 6, 4, 7, 1], seed=2)
    plain = pair_batch(Tok, src, tgt, 16, 8, packing=False)
    packed = pair_batch(Tok, src, tgt, 16, 8, packing=True)
    flat = flatten_rows(packed, FLAT, FLAT_FILL)
    assert flat["input_ids"].shape == (1, 64) and packed["input_ids"].shape == (4, 16)   # 52 tokens: 16-multiple
    results = {}
    for mode in ("plain", "rows", "flat"):
        model = t5("sdpa")
        assert not bias_by_offset(model) and relative_bias_by_offset(model) and bias_by_offset(model)
        D.install(model)
        if checkpointing:        # train.activation_checkpointing: each block recomputed in the backward
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        assert D.flattens_packed(model)
        lookups = []                         # flat: both stacks' embeddings in one lookup (shared_lookup)
        model.encoder.embed_tokens.register_forward_hook(lambda m, i, o: lookups.append(i[0].shape))
        model.decoder.embed_tokens.register_forward_hook(lambda m, i, o: lookups.append(i[0].shape))
        biases = []                          # flat: no (heads, N, N) bias over the flat sequence is built
        for m in model.modules():
            if getattr(m, "has_relative_attention_bias", False):
                m.compute_bias = (lambda f: lambda *a, **k: biases.append(f(*a, **k)) or biases[-1])(m.compute_bias)
        if mode == "plain":
            loss = model(**plain).loss * (plain["labels"] != -100).sum()
        else:
            loss = (packed_forward(model, flat, rows=packed) if mode == "flat" else packed_forward(model, packed)).loss
            loss = loss * (packed["labels"] != -100).sum()
        assert len(lookups) == (1 if mode == "flat" else 2)
        assert len(biases) == 2 and all((b.numel() == 0) == (mode == "flat") for b in biases)
        loss.backward()
        results[mode] = loss.detach(), grads(model)
    next(model.parameters()).ds_id = 0       # ZeRO-3: its hooks hand the layers other mask objects, so no flattening
    assert not D.flattens_packed(model)
    for mode in ("rows", "flat"):
        torch.testing.assert_close(results[mode][0], results["plain"][0], atol=1e-4, rtol=1e-5)
        assert_same_grads(results[mode][1], results["plain"][1])
    model = t5("sdpa")                       # transformers' own bias depends on the flat positions: not flattened,
    D.install(model)                         # and refused if given a flat batch
    model.train()
    assert not D.flattens_packed(model)
    with pytest.raises(ValueError, match="relative_bias_by_offset"):
        packed_forward(model, flat, rows=packed)
    with pytest.raises(ValueError, match="lost its row layout"):      # and a flat batch with the rows' mask lost
        model(input_ids=flat["input_ids"], attention_mask=torch.ones(4, 1, 16, 16, dtype=torch.bool),
              decoder_input_ids=flat["decoder_input_ids"])


# ---------------------------------------------------------------- encoders (MLM, ELECTRA, RoFormer)
def encoder(family, impl):
    from transformers import (BertConfig, BertForMaskedLM, ElectraConfig, ElectraForPreTraining, RoFormerConfig,
                              RoFormerForMaskedLM)
    torch.manual_seed(0)
    kw = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=64,
              attn_implementation=impl)
    if family == "bert":
        return BertForMaskedLM(BertConfig(**kw))
    if family == "electra":
        return ElectraForPreTraining(ElectraConfig(embedding_size=16, **kw))
    return RoFormerForMaskedLM(RoFormerConfig(**kw))


@pytest.mark.parametrize("family, impl", [("bert", "sdpa"), ("bert", "eager"), ("electra", "sdpa"),
                                          ("roformer", "eager")])
def test_packed_documents_match_unpacked(family, impl):
    """pack_rows' segments (what mlm-proposal and ELECTRA train on): same per-document loss and gradients."""
    from pretrain.objectives.mlm_proposal import pack_rows
    from pretrain.packing import encoder_kwargs
    docs = seqs([5, 17, 3, 9, 30, 2], seed=3)
    model = encoder(family, impl)
    per_doc, all_grads = [], []
    for packing in (False, True):
        rows = pack_rows(docs, 20, cls_id=2, sep_id=3, pad_id=0, packing=packing)
        kw = encoder_kwargs(model, rows["attention_mask"], rows["segment_ids"], rows["position_ids"])
        logits = model(input_ids=rows["input_ids"], **kw).logits
        keep, seg = rows["unit_ids"] >= 0, rows["segment_ids"]
        if family == "electra":   # replaced-token head: a per-token binary loss against a fixed target
            loss = F.binary_cross_entropy_with_logits(logits, (rows["input_ids"] % 2).float(), reduction="none")
        else:                     # masked-LM head: each token predicts itself
            loss = F.cross_entropy(logits.transpose(1, 2), rows["input_ids"], reduction="none")
        n = int(seg.max()) + 1
        per_doc.append(torch.zeros(n).index_add(0, seg[keep], loss[keep]))
        loss[keep].sum().backward()
        all_grads.append(grads(model))
        model.zero_grad()
        if packing:
            assert rows["input_ids"].shape[0] < len(rows["segment_ids"].unique()) - 1   # rows shared
    torch.testing.assert_close(per_doc[1], per_doc[0], atol=2e-5, rtol=1e-5)
    assert_same_grads(all_grads[1], all_grads[0])


def test_packing_changes_the_loss_without_the_segment_mask():
    """The equivalence above is not vacuous: the same rows attended as one sequence give other losses."""
    from pretrain.objectives.mlm_proposal import pack_rows
    docs = seqs([5, 17, 3, 9], seed=3)
    model = encoder("bert", "sdpa")
    rows = pack_rows(docs, 40, cls_id=2, sep_id=3, pad_id=0)
    masked = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits
    from pretrain.packing import encoder_kwargs
    kw = encoder_kwargs(model, rows["attention_mask"], rows["segment_ids"], rows["position_ids"])
    assert not torch.allclose(masked, model(input_ids=rows["input_ids"], **kw).logits, atol=1e-3)


# ---------------------------------------------------------------- RoFormer-Sim (UniLM rows)
def test_roformer_sim_packed_rows_match_unpacked(tiny_data):
    """Seq2seq loss, contrastive loss (vectors pooled per sequence) and gradients, with hard negatives."""
    import random

    from conftest import REPO
    from pretrain.config import load_config
    from pretrain.objectives.roformer_sim import RoFormerSimObjective
    cfg = load_config(REPO / "configs" / "roformer-sim.yaml",
                      [*tiny_data, "objective.pair_file=", "arch.dropout_rate=0.0", "objective.noise_prob=0.0", "train.max_source_len=24",
                       "train.max_target_len=24"])
    obj = RoFormerSimObjective(cfg)
    torch.manual_seed(0)
    model = obj.build_model()
    pairs = [("今天天气很好", "天气不错"), ("怎么开通花呗", "花呗如何开通"), ("我们去公园散步吧", "去公园走走"),
             ("数学是研究数量的学科", "数学研究数量")]
    terms, all_grads = [], []
    for packing in (False, True):
        batch = obj.encode_pairs(pairs, random.Random(0), negatives=["我们不去公园"], packing=packing)
        loss, t = obj.loss(model, batch)
        loss.backward()
        terms.append(t)
        all_grads.append(grads(model))
        model.zero_grad()
    assert batch["input_ids"].shape[0] < 2 * len(pairs) + 1
    for key in ("seq2seq_loss", "contrastive_loss", "contrastive_acc"):
        assert float(terms[1][key]) == pytest.approx(float(terms[0][key]), rel=1e-5, abs=1e-6), key
    assert_same_grads(all_grads[1], all_grads[0])
