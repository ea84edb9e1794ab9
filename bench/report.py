"""Refresh BENCHMARKS.md from the benchmarks' printed tables (what `make bench` calls last).

Each ``bench/<name>.py`` prints markdown tables; ``make bench`` saves that output as
``bench/results/<name>.out``. This keeps, per benchmark, the table lines (and the line
right above each table as its caption) and puts them between
``<!-- bench:<name> -->`` and ``<!-- /bench:<name> -->`` in BENCHMARKS.md, adding the
block at the end when it is new. Hand-written text outside the markers is kept.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tables(text: str) -> str:
    lines, out = text.splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith("|"):
            if (i == 0 or not lines[i - 1].startswith("|")) and i > 0 and lines[i - 1].strip():
                out.append("")
                out.append(lines[i - 1].strip())
            out.append(line)
        elif out and out[-1].startswith("|"):
            out.append("")
    return "\n".join(out).strip()


def main() -> int:
    md_path = ROOT / "BENCHMARKS.md"
    md = md_path.read_text(encoding="utf-8") if md_path.exists() else "# Benchmarks\n"
    for out in sorted((ROOT / "bench" / "results").glob("*.out")):
        name = out.stem
        body = tables(out.read_text(encoding="utf-8", errors="replace"))
        if not body:
            continue
        block = f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"
        pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
        if pattern.search(md):
            md = pattern.sub(lambda _: block, md)
        else:
            md = md.rstrip() + f"\n\n### `bench/{name}.py` (latest `make bench`)\n\n{block}\n"
    md_path.write_text(md, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
