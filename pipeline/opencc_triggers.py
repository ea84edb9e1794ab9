"""Characters without which OpenCC leaves a text unchanged, so the cleaner converts only texts
that hold one (4 % of the benchmark corpus; conversion was 3 % of the whole pipeline's time).

OpenCC changes text only where a dictionary key matches it: a single character whose value
differs, or a phrase whose value differs. Every such phrase holds a character of the first kind,
or else (110 of 477 in ``TSPhrases``, e.g. 深沈 -> 深沉, where 沈 alone stays) one of its characters
is taken as its witness. A text with none of these characters matches no key that changes
anything, in any stage of a conversion chain (a stage that changes nothing hands the next stage
the text it was given), so skipping it gives the same output.

The sets come from the dictionaries of the installed OpenCC, dumped to text by the ``opencc_dict``
tool its wheel ships, and are stored per OpenCC version in ``opencc_triggers.json``. Another
OpenCC version (or a missing file) means no filter: every text is converted, as before.

    python -m pipeline.opencc_triggers      # regenerate for the installed OpenCC
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Optional

CONFIGS = ("t2s", "tw2s", "hk2s", "tw2sp")
STORE = Path(__file__).with_name("opencc_triggers.json")


def _opencc_version() -> Optional[str]:
    try:
        return metadata.version("opencc")
    except metadata.PackageNotFoundError:
        return None


def _dict_files(node) -> list[str]:
    """Every ``.ocd2`` file a config (or a part of it) names, in any stage or group."""
    if isinstance(node, dict):
        files = [node["file"]] if node.get("type") == "ocd2" and "file" in node else []
        return files + [f for key, value in node.items() if key != "segmentation" for f in _dict_files(value)]
    if isinstance(node, list):
        return [f for item in node for f in _dict_files(item)]
    return []


def triggers(config: str) -> str:
    """The trigger characters of an OpenCC config, sorted, from its dictionaries."""
    import opencc

    clib = Path(opencc.__file__).parent / "clib"
    share = clib / "share" / "opencc"
    spec = json.loads((share / f"{config}.json").read_text(encoding="utf-8"))
    entries: list[tuple[str, str]] = []        # (key, first value) of every dictionary, in every stage
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(str(clib / d) for d in ("lib64", "lib"))}
    with tempfile.TemporaryDirectory() as tmp:
        for name in dict.fromkeys(_dict_files(spec)):
            out = Path(tmp) / f"{name}.txt"
            subprocess.run([str(clib / "bin" / "opencc_dict"), "-i", str(share / name), "-o", str(out),
                            "-f", "ocd2", "-t", "text"], check=True, env=env, capture_output=True)
            for line in out.read_text(encoding="utf-8").splitlines():
                key, values = line.split("\t", 1)
                entries.append((key, values.split(" ")[0]))
    # a key may map to itself in one dictionary and change in another (樑: kept by TWVariantsRev,
    # 梁 in TSCharacters): a change in any dictionary makes a trigger
    changed = {k for k, v in entries if len(k) == 1 and v != k}
    kept = {k for k, v in entries if len(k) == 1 and v == k}
    out = set(changed)
    for key, value in entries:
        if len(key) > 1 and value != key and not changed.intersection(key):
            # the witness: a character OpenCC keeps alone (the ambiguous one, e.g. 沈), else the last
            out.add(next((c for c in key if c in kept), max(key)))
    return "".join(sorted(out))


@functools.lru_cache(maxsize=None)
def pattern(config: str) -> Optional[re.Pattern]:
    """A regex that finds a trigger character of ``config`` (any astral character counts, to
    keep the character class in the regex engine's fast BMP form); None when the stored sets
    are not for the installed OpenCC."""
    try:
        store = json.loads(STORE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    chars = store.get("configs", {}).get(config)
    if store.get("opencc") != _opencc_version() or not chars:
        logging.getLogger("pipeline.clean").info(
            "%s holds no %s set for OpenCC %s: every text goes through OpenCC (same output, slower); "
            "python -m pipeline.opencc_triggers makes one", STORE.name, config, _opencc_version())
        return None
    bmp = "".join(re.escape(c) for c in chars if ord(c) < 0x10000)
    return re.compile(f"[{bmp}\U00010000-\U0010ffff]")


def main() -> int:
    version = _opencc_version()
    if version is None:
        print("error: opencc is not installed", file=sys.stderr)
        return 2
    store = {"opencc": version, "configs": {c: triggers(c) for c in CONFIGS}}
    STORE.write_text(json.dumps(store, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{STORE}: OpenCC {version}, " + ", ".join(f"{c} {len(s)}" for c, s in store["configs"].items()),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
