"""The training side: ``loader`` (dataset, bucket sampler, collators) and ``hf`` (transformers / TRL).
Imports neither ``tokenizers`` nor ``jinja2``."""
