"""Evaluation tasks for `python -m pretrain.evaluate` (one module per task, each with `run`)."""
