"""The portability rule, checked on the pipeline graphs without running them.

Some runners execute only what feeds the last transform (Beam's DaskRunner
computes the last one and what it reads), and some hand every output of a
multi-output ParDo to every consumer.  So both pipelines must have one sink,
applied last, that every transform's output reaches (as a main or side
input, through other transforms), and no transform with several outputs.
"""

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor

from pipeline.config import load_config
from pipeline.pairs import PairConfig, build_pairs_pipeline
from pipeline.run import build_pipeline


def portability_problems(p: beam.Pipeline) -> list[str]:
    """Violations of the rule, one line each (empty: portable)."""
    leaves = []

    class Leaves(PipelineVisitor):
        def visit_transform(self, node):
            leaves.append(node)

    p.visit(Leaves())
    consumed = set()
    for node in leaves:
        consumed.update(id(pc) for pc in node.inputs)
        consumed.update(id(si.pvalue) for si in node.side_inputs)
    problems = [f"{n.full_label}: {len(n.outputs)} outputs" for n in leaves if len(n.outputs) > 1]
    sinks = [n for n in leaves if not any(id(pc) in consumed for pc in n.outputs.values())]
    if [n.full_label for n in sinks] != [leaves[-1].full_label]:
        problems.append(f"sinks {[n.full_label for n in sinks]}, expected only the last transform {leaves[-1].full_label}")
    return problems


def _pipeline():
    return beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))


@pytest.mark.slow     # 1-2 s (the fast tier stays under a minute)
def test_corpus_pipeline_is_portable(tmp_path):
    for overrides in ({}, {"dedup": {"near": False}}, {"dedup": {"exact": False, "near": False}}):
        p = _pipeline()
        build_pipeline(p, ["in.jsonl"], str(tmp_path), load_config(None, overrides))
        assert portability_problems(p) == [], overrides


def test_pairs_pipeline_is_portable(tmp_path):
    p = _pipeline()
    build_pairs_pipeline(p, [(("train", 0, 1), "in.jsonl.gz")], str(tmp_path), PairConfig())
    assert portability_problems(p) == []


def test_the_rule_catches_dangling_branches_and_multi_output_steps():
    p = _pipeline()
    nums = p | beam.Create([1, 2])
    _ = nums | "Dangling" >> beam.Map(str)
    _ = nums | "Last" >> beam.Map(abs)
    assert len(portability_problems(p)) == 1
    p = _pipeline()
    split = p | beam.Create([1]) | beam.FlatMap(lambda x: [x]).with_outputs("odd", main="even")
    _ = (split.even, split.odd) | beam.Flatten()
    assert any("2 outputs" in line for line in portability_problems(p))
