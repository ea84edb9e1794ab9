"""Padding waste with and without packing, per objective, on real Chinese text (counts only).

Every objective's own collator (``train.packing=false`` vs ``true``) at its ``small`` preset
(sequence lengths and micro-batch size), on documents from the shared data folder: long
news (THUCNews), mixed-genre documents (C3), short reviews (waimai + hotel) and short
e-commerce comments (EPRSTMT), and all of them shuffled together. Tokenizer: the released
BERT-Chinese vocabulary (``tokenizer.released``). T5-PEGASUS reads pseudo-summary pairs
made by ``pipeline.pairs.make_pair`` from the same documents (documents with too few
sentences give no pair). Waste = padding cells / all cells of the batch tensors (T5: encoder
and decoder together; the MLM collator also leaves out documents beyond its row budget,
reported as tokens kept). For T5-PEGASUS the packed column also gives the waste of the
flattened batch its linear layers see with ``train.flatten_packed`` (padding to ``flat_length``).

    python bench/packing_bench.py [--docs 2048]
Writes bench/results/packing.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("ZH_SHARED_DATA", REPO.parent / "shared" / "data"))


def corpora() -> dict[str, list[str]]:
    c = DATA / "corpus"
    news = [line.split("\t", 1)[1] for line in (c / "thucnews_cnews_subset" / "cnews.val.txt")
            .read_text(encoding="utf-8").splitlines() if "\t" in line]
    c3 = ["".join(item[0]) for item in json.loads((c / "c3" / "c3-m-train.json").read_text(encoding="utf-8"))]
    reviews = []
    for name in ("waimai_10k.csv", "ChnSentiCorp_htl_all.csv"):
        with open(c / "sophonplus_reviews" / name, encoding="utf-8") as fh:
            reviews += [row["review"] for row in csv.DictReader(fh) if row.get("review")]
    comments = [json.loads(line)["sentence"] for line in
                (c / "fewclue" / "eprstmt_unlabeled.json").read_text(encoding="utf-8").splitlines()]
    out = {"THUCNews news": news, "C3 documents": c3, "reviews": reviews, "EPRSTMT comments": comments}
    mixed = [t for texts in out.values() for t in texts]
    random.Random(0).shuffle(mixed)
    out["all, shuffled together"] = mixed
    for texts in out.values():
        random.Random(1).shuffle(texts)
    return out


def cells(batch: dict) -> tuple[int, int, int]:
    """(text tokens, tensor cells, rows) of a batch: encoder (and decoder) inputs."""
    tokens, total, rows = int(batch["attention_mask"].sum()), batch["input_ids"].numel(), batch["input_ids"].shape[0]
    if "labels" in batch and batch["labels"].dim() == 2:        # T5: the decoder side
        tokens += int((batch["labels"] != -100).sum())
        total += batch["labels"].numel()
    return tokens, total, rows


def measure(objective, records: list[dict], batch_size: int, seed: int = 0) -> dict:
    random.seed(seed)
    import torch
    torch.manual_seed(seed)
    from pretrain.objectives._t5 import FLAT, FLAT_FILL
    from pretrain.packing import flatten_rows
    tokens = total = rows = batches = flat = 0
    for i in range(0, len(records) - batch_size + 1, batch_size):
        batch = objective.collate(records[i:i + batch_size])
        t, c, r = cells(batch)
        tokens, total, rows, batches = tokens + t, total + c, rows + r, batches + 1
        if "decoder_segment_ids" in batch:          # T5 with train.flatten_packed: what the linear layers see
            flat += cells(flatten_rows(batch, FLAT, FLAT_FILL))[1]
    out = {"waste": 1 - tokens / total if total else 0.0, "tokens": tokens, "rows_per_batch": rows / max(batches, 1),
           "batches": batches}
    if flat:
        out["waste_flattened"] = 1 - tokens / flat
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2048, help="documents per corpus and objective")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "packing.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pipeline.pairs import Rejected, make_pair
    from pretrain.config import config_path, load_config
    from tokenizer.released import build_released_tokenizer

    texts = corpora()
    results, lines = {}, ["| objective (small preset) | corpus | padding waste, one per row | packed | "
                          "rows per micro-batch | tokens kept (packed / one per row) |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        build_released_tokenizer(DATA / "vocab" / "bert_chinese_vocab.txt", "bert-chinese", tmp)
        for model in ("t5-pegasus", "mlm-proposal", "electra", "roformer-sim"):
            for corpus, docs in texts.items():
                out = {}
                for packing in (False, True):
                    cfg = load_config(config_path(model), [f"tokenizer.dir={tmp}", f"train.packing={str(packing).lower()}",
                                                           "objective.sampling=uniform"] if model == "mlm-proposal" else
                                      [f"tokenizer.dir={tmp}", f"train.packing={str(packing).lower()}"], size="small")
                    obj = cfg.objective_class(cfg)
                    if model == "t5-pegasus":
                        pairs = (make_pair({"id": str(i), "text": d}, config=cfg.pairs) for i, d in enumerate(docs))
                        records = [p for p in pairs if not isinstance(p, Rejected)][:args.docs]
                    else:
                        records = [{"id": str(i), "text": d} for i, d in enumerate(docs[:args.docs])]
                    if len(records) < cfg.train.micro_batch_size:
                        break
                    out[packing] = measure(obj, records, cfg.train.micro_batch_size)
                if len(out) < 2:
                    continue
                results[f"{model}/{corpus}"] = {"unpacked": out[False], "packed": out[True],
                                                "records": len(records), "micro_batch": cfg.train.micro_batch_size}
                kept = out[True]["tokens"] / max(out[False]["tokens"], 1)
                flat = out[True].get("waste_flattened")
                flat = f" ({100 * flat:.1f} % flattened)" if flat is not None else ""
                lines.append(f"| {model} | {corpus} | {100 * out[False]['waste']:.1f} % | "
                             f"**{100 * out[True]['waste']:.1f} %**{flat} | {out[False]['rows_per_batch']:.0f} -> "
                             f"{out[True]['rows_per_batch']:.1f} | {kept:.2f} |")
                print(lines[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
