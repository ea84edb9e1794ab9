"""Apache Beam corpus pipeline: read, clean, filter, dedup, shard.

Entry points: ``python -m pipeline`` and ``pipeline.run.run_pipeline``; the
pure per-document functions live in ``pipeline.clean``, ``pipeline.filters``,
``pipeline.dedup``, ``pipeline.readers`` and ``pipeline.shards``.
"""

import logging as _logging


class _DropBeamNoise(_logging.Filter):
    """Importing apache_beam logs an 'apitools not found' warning on the root logger, once per
    process; it concerns only Google BigQuery IO, which this project does not use."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return not record.getMessage().startswith("apitools not found")


_logging.getLogger().addFilter(_DropBeamNoise())
