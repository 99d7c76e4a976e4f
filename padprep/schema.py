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
# Where each row (each sequence of a packed row) came from: beside every shard ``NAME.arrow``, the sidecar
# ``NAME.sources.parquet`` (trainers' loaders read the shard alone): one line per sequence, in the shard's order,
# with its row, its sequence within the row, its input (index in the manifest's ``inputs``) and its line there.
SOURCES_SUFFIX = ".sources.parquet"
SOURCE_INPUT, SOURCE_LINE = "source_input", "source_line"

# Every reject code a build can write (``rejects.jsonl``'s ``code``, the manifest's ``totals.reasons``), and
# what it means. Each raise site names its code; a code not in this table is a bug (tests/unit/output).
REJECT_CODES = {
    # reading (input/read.py)
    "not_utf8": "the line is not valid UTF-8",
    "too_long_line": "a record longer than the line limit, not read",
    "truncated_element": "a JSON array element cut off by the end of the file",
    "after_array": "text after the end of a JSON array",
    # parsing and converting (input/conversation.py, input/formats.py)
    "empty_record": "a line holding only whitespace",
    "nul_byte": "a NUL byte in the record",
    "invalid_json": "the record is not valid JSON",
    "not_object": "the record is not a JSON object",
    "unknown_format": "the record has no known format's keys",
    "format_mismatch": "the record's shape differs from its file's format",
    "lone_surrogate": "an escape that is not text (a lone UTF-16 surrogate)",
    "missing_field": "a field the format needs is absent",
    "wrong_type": "a field holds the wrong kind of value",
    "invalid_json_field": "a field that holds JSON text is not valid JSON",
    "unknown_role": "a role or speaker padprep does not know (see --role-map)",
    "empty_reply": "an assistant reply with no text and no tool call",
    "empty_prompt": "no prompt to answer",
    "nothing_to_train": "no reply or completion to train",
    "invalid_record": "the record breaks a rule of its format",
    "internal_error": "padprep failed on the record (a bug: please report it)",
    # rendering (chat/render.py)
    "template_error": "the chat template raised an error or failed on the record",
    "template_limit": "the chat template went past a render limit",
    "span_check": "a reply's span could not be placed exactly in the render",
    # length and labels (chat/process.py)
    "too_long": "longer than --max-length (or too large to render)",
    "no_trained_token": "no token left to train",
    # preference pairs (input/pairs.py, chat/pairs.py)
    "pair_shape": "a side of a preference pair is not one assistant reply after the shared prompt",
    "prompt_mismatch": "the two sides of a pair render different prompt tokens",
    "completion_gap": "a side's completion holds tokens its labels leave out",
    "no_preference": "chosen and rejected are the same tokens (the pair teaches no preference)",
}
# The columns of a preference build's shards (TRL's): unpadded ``list<int32>``.
PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
# ``--padded-pairs``: each side as a padded row (prompt + completion), labels on the completion only.
PADDED_PAIR_COLUMNS = tuple(f"{side}_{c}" for side in ("chosen", "rejected") for c in ("input_ids", "attention_mask", "labels"))
