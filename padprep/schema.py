"""Names every phase and every reader of a build agree on: columns, file names, the ignore index.

Imports nothing, so that a training script reading shards loads none of the build's libraries.
"""

IGNORE_INDEX = -100  # cross-entropy's ignore index: the label of every token not trained

COLUMNS = ("input_ids", "attention_mask", "labels")  # fixed-size int32 columns of every shard
PACKED_COLUMNS = (*COLUMNS, "position_ids")  # fixed-size columns of a packed shard; plus ``seq_lens``
SEQ_LENS = "seq_lens"  # a packed row's sequence lengths (list<int32>)
LOSS_WEIGHTS = "loss_weights"  # float32, only in builds where some message's loss_weight is fractional

MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
