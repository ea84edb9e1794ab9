"""Chinese word + character vocabulary (WoBERT / T5 PEGASUS recipe) and its fast tokenizer.

Entry points: ``python -m tokenizer`` and ``tokenizer.build.build_tokenizer``.
"""
