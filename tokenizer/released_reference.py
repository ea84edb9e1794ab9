"""Literal, slow references for the released-vocabulary recipes (what tokenizer.released must equal).

* ``Bert4kerasJieba``: bert4keras' ``Tokenizer(vocab, do_lower_case=True,
  pre_tokenize=lambda s: jieba.cut(s, HMM=False))``, step by step in plain Python with
  jieba itself: the T5 PEGASUS and WoBERT recipe.
* ``bert_chinese_reference``: transformers' pure-Python BertTokenizer (BasicTokenizer +
  WordpieceTokenizer), the BERT-Chinese recipe.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from .bert_basic import is_cjk, is_punctuation, is_removed, is_space


class Bert4kerasJieba:
    """The T5 PEGASUS / WoBERT tokenizer as its authors ran it, one rule at a time."""

    def __init__(self, vocab_file: str | Path, word_maxlen: int = 200):
        self.tokens: list[str] = []
        self.ids: dict[str, int] = {}
        for line in Path(vocab_file).read_text(encoding="utf-8").splitlines(keepends=True):
            fields = line.split()  # bert4keras: first field of the line, else the stripped line
            token = fields[0] if fields else line.strip()
            self.ids[token] = len(self.ids)
            self.tokens.append(token)
        if len(self.ids) != len(self.tokens):
            raise ValueError(f"{vocab_file}: bert4keras would renumber this vocabulary (repeated or blank tokens)")
        self.word_maxlen = word_maxlen

    @staticmethod
    def lower_and_strip(text: str) -> str:
        """do_lower_case: lowercase, canonical decomposition, then no nonspacing marks."""
        decomposed = unicodedata.normalize("NFD", text.lower())
        return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")

    def basic(self, text: str) -> list[str]:
        """Punctuation and CJK characters alone, whitespace splits, controls vanish."""
        out = ""
        for ch in text:
            if is_punctuation(ch) or is_cjk(ch):
                out += f" {ch} "
            elif is_space(ch):
                out += " "
            elif not is_removed(ch):
                out += ch
        return out.split()

    def wordpiece(self, word: str) -> list[str]:
        """Longest vocabulary prefix first, "##" after the first piece; any miss: the whole word."""
        if len(word) > self.word_maxlen:
            return [word]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    pieces.append(piece)
                    start = end
                    break
            else:
                return [word]
        return pieces

    def tokenize(self, text: str) -> list[str]:
        from .jieba_util import jieba_instance

        out: list[str] = []
        for word in jieba_instance().cut(self.lower_and_strip(text), HMM=False):
            if word in self.ids:
                out.append(word)
            else:
                for piece in self.basic(self.lower_and_strip(word)):
                    out.extend(self.wordpiece(piece))
        return out

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        unk = self.ids["[UNK]"]
        ids = [self.ids.get(t, unk) for t in self.tokenize(text)]
        return [self.ids["[CLS]"], *ids, self.ids["[SEP]"]] if add_special_tokens else ids


def bert_chinese_reference(vocab_file: str | Path):
    """transformers' slow BertTokenizer, lowercasing (bert-base-chinese's setting)."""
    from transformers import BertTokenizerLegacy

    return BertTokenizerLegacy(str(vocab_file), do_lower_case=True)


def reference_for(recipe: str, vocab_file: str | Path):
    """An object with ``encode(text) -> ids`` (no [CLS]/[SEP]) for the recipe."""
    if recipe == "bert-chinese":
        slow = bert_chinese_reference(vocab_file)

        class _Slow:
            tokens = [slow.convert_ids_to_tokens(i) for i in range(slow.vocab_size)]

            @staticmethod
            def encode(text: str) -> list[int]:
                return slow.encode(text, add_special_tokens=False)

        return _Slow()
    return Bert4kerasJieba(vocab_file)
