"""Knobs of T5-PEGASUS pseudo-summary construction (``pipeline.pairs``), Beam-free so configs can import it."""
from __future__ import annotations

import dataclasses

from pipeline.typed_config import InvalidValue


@dataclasses.dataclass(frozen=True)
class PairConfig:
    """Knobs of pair construction; all lengths are in characters.

    ``max_doc_chars``: only the leading sentences that fit in this budget are
    used (always at least one).  Text past ``max_source_chars +
    max_target_chars`` would be truncated away anyway, and greedy selection
    costs roughly cubic time in document length.  ``None`` means
    ``max_source_chars + max_target_chars``; ``0`` or less means no limit.
    """

    ratio: float = 0.25
    max_source_chars: int = 1024
    max_target_chars: int = 256
    min_sentences: int = 4
    max_sentence_chars: int = 256
    max_doc_chars: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise InvalidValue("ratio", f"must be in (0, 1), got {self.ratio}")
        for name in ("max_source_chars", "max_target_chars", "max_sentence_chars"):
            if getattr(self, name) < 1:
                raise InvalidValue(name, "must be >= 1")
        if self.min_sentences < 2:
            raise InvalidValue("min_sentences", "must be >= 2 (source and target both non-empty)")

    @property
    def doc_budget(self) -> int | None:
        """Characters of the document actually used, or None for all."""
        if self.max_doc_chars is None:
            return self.max_source_chars + self.max_target_chars
        return self.max_doc_chars if self.max_doc_chars > 0 else None
