"""padprep: chat / instruction data -> tokenized, label-masked, length-bucketed, padded Arrow shards."""

__version__ = "0.1.0"
