"""Run by tests/unit/train/test_hf.py under ``torch.distributed.run`` (2 CPU processes, gloo): train a tiny Llama
through ``BucketBatchesMixin`` + ``Trainer`` and save every batch this rank computed a loss on.

    python -m torch.distributed.run --nproc_per_node 2 tests/support/hf_ddp_train.py BUILD_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402

import padprep  # noqa: E402
from tests.support.hf import quiet_args, recording, tiny_llama  # noqa: E402


def main(build: str, out: str) -> None:
    torch.set_num_threads(1)
    args = quiet_args(
        transformers.TrainingArguments, Path(out) / "run", per_device_train_batch_size=4, num_train_epochs=2, seed=3
    )
    assert args.world_size == 2, f"expected 2 processes, got world_size={args.world_size}"
    trainer = recording(transformers.Trainer)(model=tiny_llama(), args=args, train_dataset=padprep.load(build))
    trainer.train()
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(trainer.batches, Path(out) / f"rank{args.process_index}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:3])
