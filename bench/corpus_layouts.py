"""Every folder of the shared corpora through ``python -m pipeline`` with no flags.

For each folder of ``$ZH_SHARED_DATA/corpus`` this runs the command a new user
types, ``python -m pipeline --input <folder> --output <tmp>``, and compares what
came out with a reference count of the records that are real Chinese text
(the field a user means, read here with the standard library and the layout
named in the shared data README, independently of ``pipeline.detect``):

    kept share = (written + duplicates) / reference records

and beside it the same share with the documents dropped as copies of an evaluation
set (``decontam_<set>``, #22) left out of the reference: CMRC2018's dev file is both a
corpus folder here and the CMRC evaluation set, so most of it is dropped on purpose.

A run that exits non-zero is reported with its one-line hint.  Counts only,
no timings (they depend on the machine).  Writes bench/results/corpus_layouts.json.

    python bench/corpus_layouts.py [--folders c3,fewclue] [--keep-output DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ZH_SHARED_DATA", ROOT.parent / "shared" / "data"))
CJK = re.compile(r"[\u4e00-\u9fff]")


def _csv_texts(text: str, column: str) -> list[str]:
    return [row[column] for row in csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))]


def _joined(value) -> str:
    return "\n".join(value) if isinstance(value, list) else str(value or "")


def reference_texts(folder: Path) -> list[str]:
    """The text of every record of a shared-corpus folder, the way its README describes it."""
    name, out = folder.name, []
    for path in sorted(folder.iterdir()):
        raw = path.read_bytes()
        if name == "c3":
            out += ["\n".join(item[0]) for item in json.loads(raw)]
        elif name == "chinese_poetry":
            out += [_joined(x.get("paragraphs", x.get("content"))) for x in json.loads(raw)]
        elif name == "cmrc2018":
            out += [p["context"] for a in json.loads(raw)["data"] for p in a["paragraphs"]]
        elif name == "fewclue":
            rows = [json.loads(line) for line in raw.decode().split("\n") if line.strip()]
            out += [r.get("content", r.get("sentence", "")) for r in rows]
        elif name == "sogou_news_smarty":
            text = raw.decode("gb18030" if ".gbk." in path.name else "utf-8")
            out += [m.group(1) for m in re.finditer(r"<content>(.*?)</content>", text, re.S)]
        elif name == "sophonplus_reviews":
            if path.suffix == ".zip":
                with zipfile.ZipFile(path) as zf:
                    for member in zf.namelist():
                        out += _csv_texts(zf.read(member).decode("utf-8"), "review")
            else:
                out += _csv_texts(raw.decode("utf-8"), "review")
        elif name == "weibo_senti_subset":
            out += _csv_texts(raw.decode("utf-8"), "review")
        elif name == "thucnews_cnews_subset":
            out += [line.split("\t", 1)[1] for line in raw.decode().split("\n") if "\t" in line]
        elif name == "thucnews_titles":
            lines = [line for line in raw.decode().split("\n") if line.strip()]
            out += [line.split("\t")[0] for line in lines] if path.name != "class.txt" else lines
        elif name == "zhwiki_sample":
            out += [json.loads(line)["text"] for line in raw.decode().split("\n") if line.strip()]
        else:
            raise SystemExit(f"no reference reader for corpus folder {name!r}")
    return out


def run_folder(folder: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--input", str(folder), "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    stats = json.loads((out / "stats.json").read_text()) if (out / "stats.json").exists() else {}
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    texts = reference_texts(folder)
    real = sum(1 for t in texts if CJK.search(t))
    kept = stats.get("written", 0) + stats.get("duplicates_exact", 0) + stats.get("duplicates_near", 0)
    eval_copies = sum(n for reason, n in stats.get("rejected", {}).items() if reason.startswith("decontam_"))
    return {
        "folder": folder.name, "rc": proc.returncode, "error": errors[-1] if errors else None,
        "records": stats.get("read", 0), "reference_records": len(texts), "real_chinese_records": real,
        "written": stats.get("written", 0),
        "duplicates": stats.get("duplicates_exact", 0) + stats.get("duplicates_near", 0),
        "rejected": stats.get("rejected", {}),
        "kept_share": round(kept / real, 4) if real else None,
        "eval_copies": eval_copies,
        "kept_share_of_non_eval": round(kept / (real - eval_copies), 4) if real > eval_copies else None,
        "accounted": stats.get("accounted"),
    }


def _share(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folders", default="", help="comma-separated folder names (default: all)")
    parser.add_argument("--keep-output", default="", help="write the runs' outputs under this folder")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "corpus_layouts.json"))
    args = parser.parse_args()
    corpus = DATA / "corpus"
    if not corpus.is_dir():
        raise SystemExit(f"no shared corpora at {corpus} (set ZH_SHARED_DATA)")
    wanted = set(filter(None, args.folders.split(",")))
    folders = [p for p in sorted(corpus.iterdir()) if p.is_dir() and (not wanted or p.name in wanted)]
    rows = []
    print("| folder | records | real Chinese | written | duplicates | rejected | kept share | kept share, eval-set copies left out |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep_output or tmp)
        for folder in folders:
            row = run_folder(folder, base / folder.name)
            rows.append(row)
            rejected = ", ".join(f"{k} {v:,}" for k, v in sorted(row["rejected"].items(), key=lambda kv: -kv[1]))
            print(f"| {row['folder']} | {row['records']:,} | {row['real_chinese_records']:,} | {row['written']:,} | "
                  f"{row['duplicates']:,} | {rejected or '-'} | "
                  f"{_share(row['kept_share'])} | {_share(row['kept_share_of_non_eval'])} |" + (f" rc {row['rc']}: {row['error']}" if row["rc"] else ""), flush=True)
    Path(args.results).write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
