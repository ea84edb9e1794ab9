"""Steps that emit one PCollection of tagged events, and named selections of them.

Every step of the pipelines yields ``(kind, payload)`` events on ONE output,
and named ``Select`` transforms pick the kinds the next steps need.  Beam's
multi-output ParDos (``.with_outputs()``) would say the same, but some
runners (Beam's DaskRunner) hand every output of a ParDo to every consumer;
one tagged output behaves the same on every runner and reads as plainly.

A step that keeps some documents and rejects others with a reason::

    def my_check(batch, threshold) -> tuple[list, list]:       # pure, unit-tested
        kept, rejects = [], []
        for key, doc in batch:                                  # doc = (id, text, source, line)
            if looks_fine(doc[1], threshold):
                kept.append((key, doc))
            else:                                               # (reason, id, source, line, snippet, kept_id)
                rejects.append(("my_reason", doc[0], doc[2], doc[3], doc[1][:300], None))
        return kept, rejects

    class MyCheck(beam.DoFn):
        def process(self, batch):
            yield from events(*my_check(batch, self.threshold))

    # in pipeline.run.build_pipeline, between two steps:
    docs = step(docs, "MyCheck", MyCheck(...), rejects)

``step`` returns the kept batches and appends the rejects to the list that
ends in ``rejects/<reason>.jsonl.gz`` and ``stats.json["rejected"]``, so the
accounting identity holds without further wiring.
"""

from __future__ import annotations

from typing import Any, Iterator

import apache_beam as beam

DOCS = "docs"
REJECTS = "rejects"


def events(docs: list, rejects: list) -> Iterator[tuple[str, Any]]:
    """A step's results as events (nothing for an empty list)."""
    if rejects:
        yield REJECTS, rejects
    if docs:
        yield DOCS, docs


def _payload(event: tuple, kind: str) -> Iterator[Any]:
    if event[0] == kind:
        yield event[1]


def _tag(payload: Any, kind: str) -> tuple[str, Any]:
    return kind, payload


class _OfKind(beam.PTransform):
    """A transform about one kind of event; subclasses say which Beam step."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def expand(self, pcoll):
        return pcoll | f"{type(self).__name__}_{self.kind}" >> self.beam_step()


class Select(_OfKind):
    """Events → the payloads of one kind."""

    def beam_step(self):
        return beam.FlatMap(_payload, self.kind)


class Keep(_OfKind):
    """Events → the events of one kind, still tagged."""

    def beam_step(self):
        return beam.Filter(_is_kind, self.kind)


class Tag(_OfKind):
    """Payloads → events of one kind (to flatten several kinds into one input)."""

    def beam_step(self):
        return beam.Map(_tag, self.kind)


def _is_kind(event: tuple, kind: str) -> bool:
    return event[0] == kind


class ReadEach(beam.PTransform):
    """Inputs (files, shards) → spread over the workers → the events of
    ``read`` (a DoFn or a function) on each."""

    def __init__(self, inputs: list, read):
        super().__init__()
        self.inputs = list(inputs)
        self.read = read

    def expand(self, pbegin):
        return (
            pbegin
            | "Inputs" >> beam.Create(self.inputs)
            | "Spread" >> beam.Reshuffle()
            | "ReadEach" >> (beam.ParDo(self.read) if isinstance(self.read, beam.DoFn) else beam.FlatMap(self.read))
        )


def step(docs, name: str, fn, rejects: list, *side_inputs):
    """Apply a keep-or-reject step (a DoFn, or a PTransform emitting the same
    events): returns its kept document batches and appends its rejects (a
    PCollection of reject lists) to ``rejects``."""
    out = docs | name >> (beam.ParDo(fn, *side_inputs) if isinstance(fn, beam.DoFn) else fn)
    rejects.append(out | f"{name}Rejects" >> Select(REJECTS))
    return out | f"{name}Docs" >> Select(DOCS)
