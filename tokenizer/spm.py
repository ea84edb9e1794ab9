"""``--algo sentencepiece``: a SentencePiece unigram model on the same text, served like the default.

SentencePiece learns the pieces and their log-probabilities; they go into the
same tokenizers pipeline (normalizer, pre-tokenizer, specials 0..104, decoder)
so both algorithms load the same way and differ only in the vocabulary.  The
training text is pre-tokenized with ``pretokenization_delimiter`` so no piece
crosses a boundary the runtime pre-tokenizer would cut.

Why the shards are read directly and not through Beam (unlike the default
algo's counting job): ``SentencePieceTrainer`` is a single C++ process that
needs one local text file (or an in-process iterator) and trains on a sample
of at most ``input_sentence_size`` lines held in memory; its EM loop cannot be
split into Beam transforms, so a Beam stage could only write that file, which
is one sequential pass either way.  For a corpus far beyond 2M lines, train on
a subset of the shards (the trainer would sample them anyway).
"""

from __future__ import annotations

import io
import string
import tempfile
from pathlib import Path

from tokenizers import Tokenizer

from pipeline.clean import CJK_PUNCTUATION

from .counting import iter_texts, shard_paths
from .fast import build_unigram
from .normalize import mark_spaces, normalize, pieces
from .vocab import BYTE_PIECE_SCORE, BYTE_PIECES, SPECIALS, coverage_tokens, jieba_scorer

DELIM = "\ue000"  # private-use character: never in cleaned text
MAX_LINE = 2000  # characters per training line (SentencePiece caps sentence length)


def training_lines(texts, lowercase: bool = True):
    """Normalized, pre-tokenized lines; long documents are cut at piece boundaries."""
    for text in texts:
        line: list[str] = []
        size = 0
        for p in pieces(mark_spaces(normalize(text, lowercase))):
            line.append(p)
            size += len(p)
            if size >= MAX_LINE:
                yield DELIM.join(line)
                line, size = [], 0
        if line:
            yield DELIM.join(line)


def train_sentencepiece(
    data_dir: str, vocab_size: int, out_dir: str | Path, lowercase: bool = True, min_char_freq: int = 1, threads: int = 2,
    char_coverage: str = "none", byte_fallback: bool = False,
) -> tuple[Tokenizer, dict]:
    """Train on the train shards; returns the tokenizer and training counts.  Byte pieces come
    right after the specials (as in the default algo); coverage characters SentencePiece did
    not learn are added (most probable by jieba first) while ``vocab_size`` allows."""
    import sentencepiece as spm

    paths = shard_paths(data_dir, "train")
    if not paths:
        raise FileNotFoundError(f"no train shards under {data_dir}")
    head = list(SPECIALS) + (BYTE_PIECES if byte_fallback else [])
    reserved = len(head)
    docs = chars = 0
    with tempfile.TemporaryDirectory(prefix="tok-spm-") as tmp:
        corpus = Path(tmp) / "train.txt"
        with corpus.open("w", encoding="utf-8") as f:
            for text in iter_texts(paths):
                docs += 1
                chars += len(text)
                for line in training_lines([text], lowercase):
                    f.write(line + "\n")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_writer=model,
            model_type="unigram",
            vocab_size=max(vocab_size - reserved + 1, 8),  # + 1: SentencePiece's own <unk> is dropped
            hard_vocab_limit=False,  # small corpora give fewer pieces, like the default algo
            character_coverage=1.0 if min_char_freq <= 1 else 0.9995,
            normalization_rule_name="identity",  # text is normalized already, same as at runtime
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            split_digits=False,
            pretokenization_delimiter=DELIM,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            input_sentence_size=2_000_000,
            shuffle_input_sentence=True,
            seed_sentencepiece_size=1_000_000,
            num_threads=threads,
            minloglevel=2,
        )
    proto = model.getvalue()
    (Path(out_dir) / "sentencepiece.model").write_bytes(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    tokens = list(head)
    scores = [0.0] * len(SPECIALS) + [BYTE_PIECE_SCORE] * (reserved - len(SPECIALS))
    seen = set(tokens)
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_unknown(i) or sp.is_control(i) or piece in seen:
            continue
        tokens.append(piece)
        scores.append(sp.get_score(i))
        seen.add(piece)
    floor = min(scores[reserved:], default=0.0)
    for ch in CJK_PUNCTUATION + (string.punctuation if byte_fallback else ""):  # as in the default algo
        if ch not in seen:
            tokens.append(ch)
            scores.append(floor)
            seen.add(ch)
    room = max(vocab_size - len(tokens), 0)
    coverage = coverage_tokens(char_coverage, vocab_size, seen, jieba_scorer(*_jieba_freq()), lowercase)[:room]
    tokens += coverage
    scores += [floor] * len(coverage)
    return build_unigram(tokens, scores, lowercase, byte_fallback), {"documents": docs, "characters": chars}


def _jieba_freq():
    from .jieba_util import jieba_instance

    dt = jieba_instance()
    return dt.FREQ, dt.total
