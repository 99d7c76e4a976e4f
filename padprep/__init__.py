"""padprep: chat / instruction data -> tokenized, label-masked, length-bucketed, padded Arrow shards."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``padprep.load`` without importing torch for every ``import padprep`` (the CLI starts faster)."""
    if name == "load":
        from .loader import load

        return load
    raise AttributeError(f"module 'padprep' has no attribute {name!r}")
