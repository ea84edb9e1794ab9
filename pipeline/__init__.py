"""Apache Beam corpus pipeline: read, clean, filter, dedup, shard.

Entry points: ``python -m pipeline`` and ``pipeline.run.run_pipeline``; the
pure per-document functions live in ``pipeline.clean``, ``pipeline.filters``,
``pipeline.dedup``, ``pipeline.readers`` and ``pipeline.shards``.
"""
