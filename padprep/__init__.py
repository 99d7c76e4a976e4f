"""padprep: chat / instruction data -> tokenized, label-masked, length-bucketed, padded Arrow shards.

The library's public names, each imported on first use (``import padprep`` loads neither torch nor the
tokenizer, so the CLI starts fast and a training script loads only the training side):

    >>> from padprep import BuildConfig, build, load, make_dataloader
    >>> result = build(BuildConfig(inputs=("chat.jsonl",), tokenizer="Qwen/Qwen3-8B", output="out"))  # doctest: +SKIP
    >>> loader = make_dataloader(load("out"), batch_tokens=16384)  # doctest: +SKIP
"""

__version__ = "0.1.0"

# public name -> the module that owns it
_PUBLIC = {
    "build": "padprep.run.pipeline",
    "BuildResult": "padprep.run.pipeline",
    "BuildConfig": "padprep.config",
    "load": "padprep.train.loader",
    "make_dataloader": "padprep.train.loader",
    "ShardDataset": "padprep.train.loader",
    "BucketBatchSampler": "padprep.train.loader",
    "collate": "padprep.train.loader",
    "pad_collate": "padprep.train.loader",
    "PackedCollator": "padprep.train.loader",
    "IGNORE_INDEX": "padprep.schema",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'padprep' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(__all__)
