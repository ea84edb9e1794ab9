"""Both pipelines beyond the DirectRunner: the portable job service with an
external SDK worker pool, and Beam's DaskRunner on a dask scheduler with two
worker processes.  Each must write the same bytes as the DirectRunner.

The services are started here (pipeline/local_services.py), on 127.0.0.1,
by PID, with a readiness wait, and stopped in teardown.  Input: a small real corpus from ZH_SHARED_DATA
(the embedded sample when that folder is absent).
"""

import os
from pathlib import Path

import pytest

from pipeline.local_services import dask_cluster, portable_service
from pipeline.pairs import build_pairs
from pipeline.run import run_pipeline

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ZH_SHARED_DATA", REPO.parent / "shared" / "data"))
pytestmark = pytest.mark.slow


def corpus_inputs() -> list[str]:
    wiki = SHARED / "corpus" / "zhwiki_sample" / "wiki_00_a.jsonl"
    return [str(wiki)] if wiki.is_file() else [str(REPO / "data" / "sample" / "*.jsonl")]


@pytest.fixture(scope="module")
def dask_args(tmp_path_factory):
    pytest.importorskip("distributed", reason="the dask extra is not installed: pip install -e '.[dask]'")
    with dask_cluster(2, str(tmp_path_factory.mktemp("dask"))) as flags:
        yield flags


@pytest.fixture(scope="module")
def portable_args(tmp_path_factory):
    with portable_service(str(tmp_path_factory.mktemp("portable"))) as flags:
        yield flags


def files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    """The DirectRunner's corpus and pairs outputs: the reference."""
    root = tmp_path_factory.mktemp("direct")
    stats = run_pipeline(corpus_inputs(), str(root / "clean"))
    assert stats["written"] > 0
    build_pairs(str(root / "clean"), str(root / "pairs"))
    return root


def run_both(tmp: Path, flags: list[str]) -> dict:
    runner, extra = flags[0].split("=", 1)[1], flags[1:]
    stats = run_pipeline(corpus_inputs(), str(tmp / "clean"), runner=runner, extra_beam_args=extra)
    assert stats["read"] == stats["written"] + sum(stats["rejected"].values()) + stats["duplicates_exact"] + stats["duplicates_near"]
    pairs = build_pairs(str(tmp / "clean"), str(tmp / "pairs"), runner=runner, extra_args=extra)
    assert pairs["read"] == pairs["written"] + sum(pairs["rejected"].values())
    return stats


@pytest.mark.parametrize("service", ["portable_args", "dask_args"])
def test_same_bytes_as_the_direct_runner(direct, service, request, tmp_path):
    run_both(tmp_path, request.getfixturevalue(service))
    for part in ("clean", "pairs"):
        got, want = files(tmp_path / part), files(direct / part)
        assert sorted(got) == sorted(want), part
        assert [name for name in want if got[name] != want[name]] == [], part
