"""load_any_tokenizer: a PreTrainedTokenizerFast for any Hugging Face tokenizer folder.

What a base checkpoint ships decides how its tokenizer is built:

* ``jieba_wordpiece.json``: this package's exact T5 PEGASUS / WoBERT tokenizer
  (tokenizer.released.JiebaBertTokenizer);
* ``tokenizer.json``: AutoTokenizer, as usual;
* ``spiece.model`` (or another SentencePiece ``*.model``) only, as Google's mT5 folders
  ship: built from the model directly (tokenizer.spiece), because transformers cannot
  parse it here (protobuf 6, pinned through Beam, against its gencode 7);
* ``vocab.txt`` only: BERT's BasicTokenizer + WordPiece, or the jieba recipe when
  tokenizer_config.json names a RoFormer / WoBERT tokenizer (which pre-cut with jieba).

``write_tokenizer_json(folder)`` saves what was built next to the source file, so
AutoTokenizer itself loads the folder afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

SPIECE_NAMES = ("spiece.model", "sentencepiece.bpe.model", "sentencepiece.model", "tokenizer.model")


def _tokenizer_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _model_type(folder: Path) -> str:
    path = folder / "config.json"
    return json.loads(path.read_text(encoding="utf-8")).get("model_type", "") if path.exists() else ""


def spiece_file(folder: Path) -> Path | None:
    return next((folder / n for n in SPIECE_NAMES if (folder / n).exists()), None)


def _jieba_vocab(folder: Path) -> bool:
    """RoFormer and WoBERT tokenizers pre-cut with jieba (HMM off): the wobert recipe."""
    name = str(_tokenizer_config(folder).get("tokenizer_class") or "")
    return "roformer" in name.lower() or "wobert" in name.lower()


def load_any_tokenizer(folder: str | Path):
    """The folder's tokenizer as a PreTrainedTokenizerFast (see the module docstring)."""
    from transformers import AutoTokenizer

    from . import released  # registers JiebaBertTokenizer with AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    if (folder / released.WORDPIECE_FILE).exists():
        return released.JiebaBertTokenizer.from_pretrained(str(folder))
    if (folder / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(folder))
    spm = spiece_file(folder)
    if spm is not None:
        from .spiece import spiece_tokenizer

        return spiece_tokenizer(spm, _tokenizer_config(folder), _model_type(folder))
    if (folder / "vocab.txt").exists():
        import tempfile

        if _tokenizer_config(folder).get("do_lower_case") is False:
            raise ValueError(f"{folder}: a cased vocab.txt (do_lower_case false) is not supported; give it a tokenizer.json")
        recipe = "wobert" if _jieba_vocab(folder) else "bert-chinese"
        with tempfile.TemporaryDirectory(prefix="tok-vocab-") as tmp:
            released.build_released_tokenizer(folder / "vocab.txt", recipe, tmp)
            return load_any_tokenizer(tmp)
    raise FileNotFoundError(f"{folder}: no tokenizer (tokenizer.json, {released.WORDPIECE_FILE}, spiece.model or vocab.txt)")


def write_tokenizer_json(folder: str | Path, out_dir: str | Path | None = None) -> Path:
    """Save the folder's tokenizer, as load_any_tokenizer builds it, so AutoTokenizer loads it
    without this package: tokenizer.json next to the source file (tokenizer_config.json and
    special_tokens_map.json too where the folder has none), or a complete folder ``out_dir``.

    Nothing is overwritten: an existing target file is an error.
    """
    import shutil
    import tempfile

    from .released import JiebaBertTokenizer

    folder = Path(folder)
    out = Path(out_dir) if out_dir is not None else folder
    tok = load_any_tokenizer(folder)
    if isinstance(tok, JiebaBertTokenizer):
        raise ValueError(f"{folder}: a jieba recipe needs tokenizer.released, it has no plain tokenizer.json")
    if (out / "tokenizer.json").exists():
        raise FileExistsError(f"{out / 'tokenizer.json'} exists")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tok-save-") as tmp:
        tok.save_pretrained(tmp)
        for path in sorted(Path(tmp).iterdir()):
            if path.name == "tokenizer.json" or not (out / path.name).exists():
                shutil.move(str(path), out / path.name)
    return out / "tokenizer.json"
