"""Exact tokenizers for released vocabularies (T5 PEGASUS, WoBERT, BERT-Chinese).

A model tokenizes only as well as it was trained, so a run, evaluation or release on a
released vocabulary must cut text exactly as that model's own recipe did:

* ``bert-chinese``: BERT's BasicTokenizer + WordPiece (transformers' BertTokenizer).
  That is all Rust: a plain tokenizer.json, no custom code.
* ``t5-pegasus`` and ``wobert``: bert4keras ``Tokenizer(vocab, do_lower_case=True,
  pre_tokenize=lambda s: jieba.cut(s, HMM=False))``.  The text is lowercased, NFD'd and
  stripped of Mn marks; jieba cuts it with its full dictionary; a word in the vocabulary
  is one token, any other word goes through BERT's basic cut and WordPiece.

Why the jieba recipes cannot be a plain tokenizer.json: their segmentation is a
Viterbi over jieba's 349,046-word dictionary, and a dictionary word outside the
vocabulary ("信心十足") must then become several tokens (信/心/十/足).  A tokenizer.json
has one model, whose pieces are its ids, and no pre-tokenizer does a dictionary
Viterbi; a Unigram over the vocabulary alone segments differently ("信心/十足").  So
they are the smallest thing that is exact: ``JiebaBertTokenizer``, a
PreTrainedTokenizerFast whose Rust backend (normalizer, WordPiece, post-processor,
decoder: ``jieba_wordpiece.json``) gets one Python pre-tokenizer that runs jieba's
Viterbi as a second Rust Unigram built from jieba's dictionary (``jieba_dictionary.json``, see
tokenizer.jieba_segment).
Importing this module registers the class with AutoTokenizer.  The folder has no
tokenizer.json on purpose: without this package, AutoTokenizer fails to load it
instead of silently tokenizing another way.

Build: ``python -m tokenizer.released --vocab VOCAB --recipe t5-pegasus --out DIR`` or
``build_released_tokenizer(vocab_file, recipe, out_dir)``.  Decoding of the jieba recipes
concatenates pieces ("##" dropped): Chinese comes back without spaces, and the
vocabularies have no space marker to restore the ones between Latin words.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerFast

from .fast import save_folder, write_configs, write_vocab_txt
from .jieba_segment import DICTIONARY_FILE, JiebaPreTokenizer, block_split, export_dictionary, jieba_dictionary
from .vocab import BERT_SPECIALS, CLS, MASK, PAD, SEP, UNK

WORDPIECE_FILE = "jieba_wordpiece.json"


@dataclass(frozen=True)
class Recipe:
    name: str
    jieba: bool  # jieba pre-segmentation (bert4keras pre_tokenize) or BERT's basic cut only
    max_word_chars: int  # longer words become [UNK]: bert4keras word_maxlen / BERT max_input_chars_per_word
    model_input_names: tuple[str, ...]
    special_map: dict


_BERT_MAP = {"pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP, "mask_token": MASK}
_WITH_TYPES = ("input_ids", "token_type_ids", "attention_mask")
RECIPES = {
    # T5 PEGASUS: [CLS] starts the decoder, [SEP] ends a sequence; T5's generate() rejects token_type_ids
    "t5-pegasus": Recipe("t5-pegasus", True, 200, ("input_ids", "attention_mask"),
                         {**_BERT_MAP, "bos_token": CLS, "eos_token": SEP}),
    "wobert": Recipe("wobert", True, 200, _WITH_TYPES, _BERT_MAP),
    "bert-chinese": Recipe("bert-chinese", False, 100, _WITH_TYPES, _BERT_MAP),
}


def read_vocab(vocab_file: str | Path) -> list[str]:
    """One token per line, id = line number (what both BERT and bert4keras read for these files)."""
    text = Path(vocab_file).read_text(encoding="utf-8")
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    tokens = [t.removesuffix("\r") for t in tokens]
    seen: dict[str, int] = {}
    for i, t in enumerate(tokens):
        if t in seen:
            raise ValueError(f"{vocab_file}:{i + 1}: token {t!r} repeats line {seen[t] + 1}")
        seen[t] = i
    missing = [t for t in BERT_SPECIALS if t not in seen]
    if missing:
        raise ValueError(f"{vocab_file}: missing special tokens {missing}")
    return tokens


@functools.lru_cache(maxsize=1)
def _strip_mn_charsmap() -> bytes:
    """Every Unicode Mn character to nothing, from Python's category table (Rust's StripAccents
    also drops Mc and Me marks)."""
    import unicodedata

    from .charsmap import compile_rules

    return compile_rules({chr(cp): "" for cp in range(0x110000)
                          if not 0xD800 <= cp < 0xE000 and unicodedata.category(chr(cp)) == "Mn"})


def final_sigma():
    """Python's ``str.lower`` gives a word-final capital sigma as ς, Rust's per-character
    lowercasing as σ: a cased letter before and none after make it final (Python also skips
    case-ignorable characters such as "." between them; that is not replicated)."""
    cased = r"[\p{Lu}\p{Ll}\p{Lt}]"
    return normalizers.Replace(Regex(f"(?<={cased})Σ(?!{cased})"), "ς")


def bert4keras_normalizer():
    """bert4keras' do_lower_case: ``text.lower()``, NFD, drop Mn characters.  Equal to Python's
    on every code point that Python's Unicode (14.0) assigns but U+11938."""
    return normalizers.Sequence([final_sigma(), normalizers.Lowercase(), normalizers.NFD(),
                                 normalizers.Precompiled(_strip_mn_charsmap())])


def _backend(tokens: list[str], recipe: Recipe) -> Tokenizer:
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix="##",
                                     max_input_chars_per_word=recipe.max_word_chars))
    if recipe.jieba:
        tok.normalizer = bert4keras_normalizer()
        tok.pre_tokenizer = block_split(jieba_dictionary()["block_class"])  # JiebaBertTokenizer adds JiebaPreTokenizer
        tok.decoder = decoders.Sequence([decoders.Replace(Regex("^##"), ""), decoders.Fuse()])
    else:  # transformers' BertTokenizer, piece by piece (and ς, as the slow one)
        tok.normalizer = normalizers.Sequence([final_sigma(), normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)])
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in BERT_SPECIALS])
    return tok


def build_released_tokenizer(vocab_file: str | Path, recipe: str, out_dir: str | Path, model_max_length: int = 512) -> dict:
    """Write a tokenizer folder for ``vocab_file`` tokenized the way ``recipe`` did; returns its summary."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, not {recipe!r}")
    r = RECIPES[recipe]
    tokens = read_vocab(vocab_file)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _backend(tokens, r)
    info = {"recipe": recipe, "vocab_file": Path(vocab_file).name, "vocab_size": len(tokens)}
    if not r.jieba:
        save_folder(tok, out, model_max_length, r.model_input_names, r.special_map, released_recipe=info)
        return info
    info.update(export_dictionary(out / DICTIONARY_FILE))
    info.pop("block_class")
    tok.save(str(out / WORDPIECE_FILE), pretty=False)
    shutil.copyfile(vocab_file, out / "vocab.txt")
    # split_special_tokens: bert4keras never matched "[CLS]" typed in the text as a special token
    write_configs(out, r.special_map, model_max_length, r.model_input_names,
                  tokenizer_class=JiebaBertTokenizer.__name__, split_special_tokens=True, released_recipe=info)
    return info


@functools.lru_cache(maxsize=4)
def released_tokenizer(vocab_file: str, recipe: str):
    """The recipe's tokenizer for ``vocab_file``, built in a temporary folder and loaded
    (for measurements; cached per process: treat it as read-only)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tok-released-") as tmp:
        build_released_tokenizer(vocab_file, recipe, tmp)
        if RECIPES[recipe].jieba:
            return JiebaBertTokenizer.from_pretrained(tmp)
        return PreTrainedTokenizerFast.from_pretrained(tmp)


class JiebaBertTokenizer(PreTrainedTokenizerFast):
    """jieba (HMM off, full dictionary) + WordPiece: the T5 PEGASUS / WoBERT tokenizer, exact.

    The Rust backend (``jieba_wordpiece.json``) does everything but the in-block
    segmentation, which ``jieba_segment.JiebaPreTokenizer`` adds as a custom component
    built from ``jieba_dictionary.json`` (detached for saving and pickling, attached again after).
    """

    vocab_files_names = {"wordpiece_file": WORDPIECE_FILE, "dictionary_file": DICTIONARY_FILE}

    @classmethod
    def convert_to_native_format(cls, **kwargs):
        return kwargs  # __init__ reads both files itself

    def __init__(self, wordpiece_file=None, dictionary_file=None, **kwargs):
        if wordpiece_file is None or dictionary_file is None:
            raise ValueError(f"JiebaBertTokenizer needs {WORDPIECE_FILE} and {DICTIONARY_FILE} (tokenizer.released)")
        for key in ("tokenizer_file", "vocab_file", "tokenizer_object"):
            kwargs.pop(key, None)
        self._dictionary = json.loads(Path(dictionary_file).read_text(encoding="utf-8"))
        super().__init__(tokenizer_object=Tokenizer.from_file(str(wordpiece_file)), **kwargs)
        self._attach()

    def _attach(self) -> None:
        self._block_split = self._tokenizer.pre_tokenizer
        self.jieba = JiebaPreTokenizer(self._dictionary, set(self._tokenizer.get_vocab(False)))
        custom = pre_tokenizers.PreTokenizer.custom(self.jieba)
        self._tokenizer.pre_tokenizer = pre_tokenizers.Sequence([self._block_split, custom])

    def _backend_json(self) -> str:
        """The backend without its custom pre-tokenizer (what jieba_wordpiece.json holds)."""
        attached = self._tokenizer.pre_tokenizer
        self._tokenizer.pre_tokenizer = self._block_split
        try:
            return self._tokenizer.to_str()
        finally:
            self._tokenizer.pre_tokenizer = attached

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        prefix = filename_prefix + "-" if filename_prefix else ""
        paths = (Path(save_directory) / (prefix + WORDPIECE_FILE), Path(save_directory) / (prefix + DICTIONARY_FILE))
        paths[0].write_text(self._backend_json(), encoding="utf-8")
        paths[1].write_text(json.dumps(self._dictionary, ensure_ascii=False), encoding="utf-8")
        write_vocab_txt(self._tokenizer, Path(save_directory))  # for people and tools that read vocab.txt
        return tuple(file_names) + tuple(str(p) for p in paths) + (str(Path(save_directory) / "vocab.txt"),)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_tokenizer"] = self._backend_json()
        del state["_block_split"], state["jieba"]
        return state

    def __setstate__(self, state):
        state = dict(state)
        state["_tokenizer"] = Tokenizer.from_str(state["_tokenizer"])
        self.__dict__.update(state)
        self._attach()

    def __deepcopy__(self, memo):
        memo[id(self._dictionary)] = self._dictionary  # read-only data: shared, not copied
        new = self.__class__.__new__(self.__class__)
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new


class _JiebaBertConfig(PretrainedConfig):
    """Only a key for AutoTokenizer.register: the class is found by the name in tokenizer_config.json."""

    model_type = "zh-pretrain-jieba-bert"


AutoTokenizer.register(_JiebaBertConfig, tokenizer_class=JiebaBertTokenizer, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tokenizer.released", description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", required=True, help="released vocab.txt (one token per line)")
    p.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    p.add_argument("--out", required=True, help="output folder (AutoTokenizer loads it after `import tokenizer.released`)")
    args = p.parse_args(argv)
    try:
        info = build_released_tokenizer(args.vocab, args.recipe, args.out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
