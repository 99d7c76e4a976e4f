"""Helpers shared by tests/unit/train/test_hf.py and the two-process run it launches (tests/support/hf_ddp_train.py).

What a trainer computed its loss on is recorded (``recording``) and traced back to the build's rows
by content (``BuildRows.check_batch``), so the checks do not trust anything the code under test says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from padprep.schema import IGNORE_INDEX
from padprep.train.loader import load

TINY_LLAMA = dict(
    vocab_size=3072,  # the sample tokenizer has 3,003 ids
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=1024,
)


def quiet_args(config: type, run_dir: Path, **options):
    """``config(...)`` (TrainingArguments, SFTConfig, DPOConfig...) for a test run on the CPU: nothing saved,
    logged or reported; ``options`` set the rest."""
    return config(
        output_dir=str(run_dir),
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        **options,
    )


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY_LLAMA))


def recording(base: type) -> type:
    """``class (BucketBatchesMixin, base)`` whose ``compute_loss`` keeps a CPU copy of every batch it is given."""
    from padprep.train.hf import BucketBatchesMixin

    class Recording(BucketBatchesMixin, base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.batches: list[dict[str, torch.Tensor]] = []
            self.losses: list[float] = []

        def compute_loss(self, model, inputs, *args, **kwargs):
            self.batches.append({k: v.detach().cpu().clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
            loss = super().compute_loss(model, inputs, *args, **kwargs)
            self.losses.append(float((loss[0] if isinstance(loss, tuple) else loss).detach()))
            return loss

    Recording.__name__ = f"Recording{base.__name__}"
    return Recording


@dataclass
class Row:
    ids: np.ndarray  # real tokens
    labels: np.ndarray  # their labels
    padded_ids: np.ndarray  # the row as stored, padding included
    seq_len: int


class BuildRows:
    """Every row of a build, read with ``padprep.load``, indexed by its real tokens."""

    def __init__(self, build: Path):
        ds = load(build)
        self.pad_id = ds.pad_id
        self.rows: list[Row] = []
        for i in range(len(ds)):
            r = {c: t.numpy().astype(np.int64) for c, t in ds[i].items()}
            real = r["attention_mask"] == 1
            self.rows.append(Row(r["input_ids"][real], r["labels"][real], r["input_ids"], len(real)))
        self.by_first = {}
        for i, row in enumerate(self.rows):
            self.by_first.setdefault(tuple(row.ids[:8].tolist()), []).append(i)

    def match(self, ids: np.ndarray, labels: np.ndarray) -> int:
        """The one build row that a right-padded ``(ids, labels)`` holds: its tokens first, then labels -100 only."""
        found = [
            i
            for i in self.by_first.get(tuple(ids[:8].tolist()), [])
            if len(ids) >= len(self.rows[i].ids)
            and np.array_equal(ids[: len(self.rows[i].ids)], self.rows[i].ids)
            and np.array_equal(labels[: len(self.rows[i].ids)], self.rows[i].labels)
            and np.all(labels[len(self.rows[i].ids) :] == IGNORE_INDEX)
        ]
        assert len(found) == 1, f"a batch row matches {len(found)} build rows (its ids and labels were changed)"
        return found[0]

    def check_batch(self, batch: dict[str, torch.Tensor], mask_is_ones: bool = False) -> list[int]:
        """The build rows of one batch; asserts the batch is exact and from one bucket.

        Every row's ids and labels equal the build row's, every other position has label -100 and
        ``attention_mask`` 0 (``mask_is_ones``: TRL's collator attends to everything, so there the
        positions after the real tokens must be the build's own padding, which a causal model never
        lets a real token see), and all rows come from one bucket that the batch width does not exceed.
        """
        ids, labels = batch["input_ids"].numpy(), batch["labels"].numpy()
        found = [self.match(ids[k], labels[k]) for k in range(len(ids))]
        buckets = {self.rows[i].seq_len for i in found}
        assert len(buckets) == 1, f"one batch mixes buckets {sorted(buckets)}"
        assert ids.shape[1] <= buckets.pop()
        mask = batch["attention_mask"].numpy()
        for k, i in enumerate(found):
            n, row = len(self.rows[i].ids), self.rows[i]
            if mask_is_ones:
                assert np.all(mask[k] == 1)
                assert np.array_equal(ids[k], row.padded_ids[: ids.shape[1]])
            else:
                assert np.all(mask[k, :n] == 1) and np.all(mask[k, n:] == 0)
        return found
