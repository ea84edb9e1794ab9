"""Evaluation for `python -m pretrain.evaluate`: sts, summarization and mlm (one module each, with `run`),
and the fine-tuning tasks (table in `tasks`, harness in `finetune`, `make eval` in `suite`, model-card
section in `card`, training-time linear probe in `probe`, metrics in `scoring`)."""
