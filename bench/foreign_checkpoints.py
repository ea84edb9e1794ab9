"""Stand-in "foreign" checkpoints for continued pretraining (no weights can be downloaded here).

Built with plain ``transformers`` code and a hand-written loop, never with this project's
trainer, on real text from ``../shared/data`` (the sample corpus when that is absent):

* ``bert_chinese``: a BERT-Chinese-shaped masked LM on the real ``bert_chinese_vocab.txt``
  (BasicTokenizer + WordPiece, 21,128 entries), trained briefly with the standard 15 % masking;
* ``mt5``: an mT5-shaped model (MT5ForConditionalGeneration, gated-GELU, untied head) with a
  SentencePiece tokenizer trained on the same text, shipped as ``spiece.model`` only, as
  Google's mT5 folders are, trained briefly on span corruption.

Used by tests/test_init.py and bench/init_bench.py.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ZH_SHARED_DATA", REPO.parent / "shared" / "data"))


def real_texts(n: int = 2000, offset: int = 0, max_chars: int = 400, articles: slice = slice(None)) -> list[str]:
    """Chunks of news articles (THUCNews subset; ``articles`` selects which), or the sample corpus."""
    out = []
    news = SHARED / "corpus" / "thucnews_cnews_subset" / "cnews.val.txt"
    if news.is_file():
        for line in news.read_text(encoding="utf-8").splitlines()[articles]:
            text = line.split("\t", 1)[-1]
            out += [text[i:i + max_chars] for i in range(0, min(len(text), 4 * max_chars), max_chars)]
    if not out:
        import json
        for path in sorted((REPO / "data" / "sample").glob("*.jsonl")):
            out += [json.loads(l)["text"][:max_chars] for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    out = [t for t in out if len(t) > 20]
    return out[offset:offset + n] if len(out) > offset else out[:n]


def _loop(model, batches, steps: int, lr: float, seed: int) -> list[float]:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        loss = model(**batches(step)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def bert_chinese(out: str | Path, steps: int = 60, hidden: int = 128, layers: int = 2, seed: int = 0,
                 texts: list[str] | None = None) -> Path:
    """A BERT-Chinese-shaped masked LM (real vocabulary) trained ``steps`` steps on real text."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast, DataCollatorForLanguageModeling

    out = Path(out)
    vocab = SHARED / "vocab" / "bert_chinese_vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{vocab}: the BERT-Chinese vocabulary is needed (ZH_SHARED_DATA)")
    tok = BertTokenizerFast(vocab=str(vocab))
    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                                       num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                                       max_position_embeddings=512))
    texts = texts or real_texts(2000)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    gen = random.Random(seed)

    def batch(step):
        enc = tok(gen.sample(texts, 16), truncation=True, max_length=128)
        return collator([{k: enc[k][i] for k in enc} for i in range(16)])

    _loop(model, batch, steps, 1e-3, seed)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def mt5(out: str | Path, steps: int = 60, d_model: int = 128, layers: int = 2, vocab_size: int = 4000,
        seed: int = 0, texts: list[str] | None = None) -> Path:
    """An mT5-shaped model with a SentencePiece tokenizer (``spiece.model`` only) trained on real text."""
    import sentencepiece as spm
    from transformers import MT5Config, MT5ForConditionalGeneration

    from pretrain.objectives.t5_span import corrupt, noise_mask
    from tokenizer.spiece import write_mt5_standin

    out = Path(out)
    texts = texts or real_texts(2000)
    write_mt5_standin(out, texts, vocab_size=vocab_size)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).unlink(missing_ok=True)            # Google's mT5 folders ship spiece.model only
    sp = spm.SentencePieceProcessor(model_file=str(out / "spiece.model"))
    n = sp.get_piece_size()
    sentinels = [n + 99 - i for i in range(100)]        # mT5: <extra_id_0> is the last id
    torch.manual_seed(seed)
    config = MT5Config(vocab_size=n + 100, d_model=d_model, d_ff=2 * d_model, d_kv=32, num_heads=max(1, d_model // 32),
                       num_layers=layers, num_decoder_layers=layers, feed_forward_proj="gated-gelu",
                       tie_word_embeddings=False, pad_token_id=sp.pad_id(), eos_token_id=sp.eos_id(),
                       decoder_start_token_id=sp.pad_id(), dropout_rate=0.0)
    model = MT5ForConditionalGeneration(config)
    from pretrain.models import untie_lm_head
    untie_lm_head(model)                                # mT5's LM head is its own matrix, not the embedding
    gen = random.Random(seed)

    def batch(step):
        srcs, tgts = [], []
        for t in gen.sample(texts, 16):
            ids = sp.encode(t)[:126]
            src, tgt = corrupt(ids, noise_mask(len(ids), 0.15, 3.0, gen), sentinels)
            srcs.append(src + [sp.eos_id()])
            tgts.append(tgt + [sp.eos_id()])
        pad = lambda rows: torch.tensor([r + [sp.pad_id()] * (max(map(len, rows)) - len(r)) for r in rows])  # noqa: E731
        x, y = pad(srcs), pad(tgts)
        return {"input_ids": x, "attention_mask": (x != sp.pad_id()).long(),
                "labels": y.masked_fill(y == sp.pad_id(), -100)}

    _loop(model, batch, steps, 1e-3, seed)
    model.save_pretrained(out, safe_serialization=True)
    return out
