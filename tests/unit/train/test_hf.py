"""padprep builds in HuggingFace's trainers: to_dataset, BucketBatchesMixin, rows mode and pad_collate.

The trainer tests train a tiny Llama through transformers' Trainer and TRL's SFTTrainer, record every
batch a loss is computed on, and trace each row back to the build by content.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from padprep.schema import COLUMNS, IGNORE_INDEX
from padprep.train.loader import BucketBatchSampler, collate, load, pad_collate
from tests.conftest import ROOT, SAMPLE, run_build, tree_bytes
from tests.support.hf import BuildRows, quiet_args, recording, tiny_llama

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
from padprep.train.hf import bucket_indices, refuse_left_padding, to_dataset  # noqa: E402  (after the skips)

# Several shards per bucket (shard_tokens is small), four buckets with several batches each.
SEED, BATCH = 3, 4


@pytest.fixture(scope="module")
def build_dir(right_dir) -> Path:
    return right_dir


@pytest.fixture(scope="module")
def rows(build_dir) -> BuildRows:
    return BuildRows(build_dir)


def _args(tmp_path: Path, config: type | None = None, **options):
    defaults = dict(per_device_train_batch_size=BATCH, num_train_epochs=2, seed=SEED, learning_rate=3e-3)
    return quiet_args(config or transformers.TrainingArguments, tmp_path / "run", **{**defaults, **options})


def _expected_batches(build: Path, epochs: int, **sampler_options) -> list[list[int]]:
    """The batches padprep's sampler gives for these epochs, built here independently of the trainer."""
    sampler = BucketBatchSampler(load(build), seed=SEED, **sampler_options)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        out += list(sampler)
    return out


def _tokenizer():
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(SAMPLE / "tokenizer"))
    tokenizer.pad_token = tokenizer.eos_token  # the sample tokenizer has none; padprep pads with eos too
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Acceptance: Trainer and SFTTrainer on the sample build
# ---------------------------------------------------------------------------------------------


def _source(build: Path, kind: str):
    return {"load": load, "to_dataset": to_dataset, "unpadded": partial(to_dataset, padded=False)}[kind](build)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["load", "to_dataset", "unpadded"])
def test_trainer_trains_on_bucket_batches_exactly(build_dir, rows, source, tmp_path, one_thread):
    before = tree_bytes(build_dir)
    trainer = recording(transformers.Trainer)(model=tiny_llama(), args=_args(tmp_path), train_dataset=_source(build_dir, source))
    trainer.train()
    got = [rows.check_batch(b) for b in trainer.batches]
    # Every batch one bucket, every row exact, in padprep's order for epochs 0 and 1 (set_epoch was called).
    assert got == _expected_batches(build_dir, 2, batch_size=BATCH)
    assert got[: len(got) // 2] != got[len(got) // 2 :]  # the second epoch is shuffled anew
    assert np.isfinite(trainer.losses).all() and np.mean(trainer.losses[-3:]) < np.mean(trainer.losses[:3])
    assert tree_bytes(build_dir) == before  # nothing written into the build


@pytest.mark.parametrize(
    "source,sft_options",
    [
        ("load", {"dataset_kwargs": {"skip_prepare_dataset": True}}),
        ("to_dataset", {"dataset_kwargs": {"skip_prepare_dataset": True}}),
        ("to_dataset", {"max_length": None}),  # TRL prepares the dataset (a map): in memory, labels kept
        ("unpadded", {"dataset_kwargs": {"skip_prepare_dataset": True}}),  # TRL's collator pads
    ],
)
@pytest.mark.slow
def test_sft_trainer_trains_on_bucket_batches_exactly(build_dir, rows, source, sft_options, tmp_path, one_thread):
    trl = pytest.importorskip("trl")
    before = tree_bytes(build_dir)
    trainer = recording(trl.SFTTrainer)(
        model=tiny_llama(),
        args=_args(tmp_path, trl.SFTConfig, **sft_options),
        train_dataset=_source(build_dir, source),
        processing_class=_tokenizer(),
    )
    trainer.train()
    # TRL's collator sets attention_mask to 1 on every row it was given: exact for right padding (checked per row).
    got = [rows.check_batch(b, mask_is_ones=source != "unpadded") for b in trainer.batches]
    assert got == _expected_batches(build_dir, 2, batch_size=BATCH)
    assert got[: len(got) // 2] != got[len(got) // 2 :]
    assert np.isfinite(trainer.losses).all()
    assert tree_bytes(build_dir) == before


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_token_budget_from_the_trainer(build_dir, rows, tmp_path, one_thread):
    budget = 700
    trainer = recording(transformers.Trainer)(
        model=tiny_llama(), args=_args(tmp_path, num_train_epochs=1), train_dataset=load(build_dir), max_tokens=budget
    )
    trainer.train()
    got = [rows.check_batch(b) for b in trainer.batches]
    assert got == _expected_batches(build_dir, 1, max_tokens=budget)
    assert all(b["input_ids"].numel() <= budget or len(b["input_ids"]) == 1 for b in trainer.batches)
    assert max(len(b) for b in got) > BATCH  # the budget, not per_device_train_batch_size, sized them


def test_trainer_with_an_hf_collator_gets_rows(build_dir, rows, tmp_path, one_thread):
    """Any other collator gets rows (through Trainer's RemoveColumnsCollator): DataCollatorForSeq2Seq here."""
    collator = transformers.DataCollatorForSeq2Seq(_tokenizer(), label_pad_token_id=IGNORE_INDEX)
    trainer = recording(transformers.Trainer)(
        model=tiny_llama(), args=_args(tmp_path, max_steps=4), train_dataset=load(build_dir), data_collator=collator
    )
    trainer.train()
    got = [rows.check_batch(b) for b in trainer.batches]
    assert got == _expected_batches(build_dir, 1, batch_size=BATCH)[:4]


def test_sequential_strategy_keeps_bucket_order(build_dir, rows, tmp_path, one_thread):
    trainer = recording(transformers.Trainer)(
        model=tiny_llama(),
        args=_args(tmp_path, num_train_epochs=1, train_sampling_strategy="sequential", max_steps=3),
        train_dataset=to_dataset(build_dir),
    )
    trainer.train()
    assert [rows.check_batch(b) for b in trainer.batches] == _expected_batches(build_dir, 1, batch_size=BATCH, shuffle=False)[:3]


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_evaluation_with_pad_collate(build_dir, rows, tmp_path, one_thread):
    """The mixin changes the train dataloader only: evaluation reads every row once, re-padded by pad_collate
    to exact rows, and its loss is the model's own loss over those batches."""
    trainer = recording(transformers.Trainer)(
        model=tiny_llama(),
        args=_args(tmp_path, max_steps=2, per_device_eval_batch_size=BATCH),
        train_dataset=load(build_dir),
        eval_dataset=load(build_dir, rows=True),
        data_collator=partial(pad_collate, pad_id=load(build_dir).pad_id),
    )
    trainer.train()
    batches = list(trainer.get_eval_dataloader())
    seen = [rows.match(ids.numpy(), labels.numpy()) for b in batches for ids, labels in zip(b["input_ids"], b["labels"])]
    assert sorted(seen) == list(range(len(rows.rows)))  # every row once, its ids and labels as built
    model = trainer.model.eval()
    with torch.no_grad():
        losses = [(model(**{k: v.to(model.device) for k, v in b.items()}).loss.item(), len(b["input_ids"])) for b in batches]
    expected = sum(loss * n for loss, n in losses) / sum(n for _, n in losses)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_docs_recipes(tmp_path, one_thread):
    """docs/training.md's Trainer and SFTTrainer recipes, run as written (paths pointed at a fresh sample build)."""
    pytest.importorskip("trl")
    readme = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- recipe: [^>]*-->\n```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 2
    build = tmp_path / "out" / "sample"
    run_build([SAMPLE / "chat.jsonl"], SAMPLE / "tokenizer", build)
    before = tree_bytes(build)
    scope: dict = {}
    for code in blocks:
        code = code.replace('"out/', f'"{tmp_path}/out/').replace('"sample_data/', f'"{SAMPLE}/')
        exec(compile(code, "docs/training.md", "exec"), scope)
        assert scope["trainer"].state.global_step > 0
    assert type(scope["trainer"]).__name__ == "BucketSFTTrainer"
    assert tree_bytes(build) == before


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


def test_left_padded_builds_are_refused(left_dir, tmp_path):
    trl = pytest.importorskip("trl")
    with pytest.raises(ValueError, match=r"--padding-side left.*padded=False"):
        to_dataset(left_dir)
    with pytest.raises(ValueError, match="--padding-side left"):  # TRL: converted to a Dataset first
        recording(trl.SFTTrainer)(
            model=tiny_llama(),
            args=_args(tmp_path, trl.SFTConfig),
            train_dataset=load(left_dir),
            processing_class=_tokenizer(),
        )
    trainer = recording(transformers.Trainer)(model=tiny_llama(), args=_args(tmp_path), train_dataset=load(left_dir))
    with pytest.raises(ValueError, match="--padding-side left"):
        trainer.train()
    assert trainer.batches == []
    # A Dataset over the left-padded shards themselves: found from the data (rows starting with padding).
    shards = sorted(str(p) for p in left_dir.glob("*.arrow"))
    from_files = datasets.concatenate_datasets(
        [datasets.Dataset.from_file(s).cast(_list_features(), keep_in_memory=True) for s in shards]
    )
    with pytest.raises(ValueError, match="start with padding"):
        refuse_left_padding(from_files)
    refuse_left_padding(to_dataset(left_dir, padded=False))  # no padding at all: fine


def _list_features():
    return datasets.Features({c: datasets.List(datasets.Value("int32")) for c in COLUMNS})


def test_sft_truncation_is_refused(build_dir, tmp_path):
    trl = pytest.importorskip("trl")
    longest = max(len(r.ids) for r in BuildRows(build_dir).rows)
    with pytest.raises(ValueError, match=rf"max_length=100\) truncated .* up to {longest} tokens"):
        recording(trl.SFTTrainer)(
            model=tiny_llama(),
            args=_args(tmp_path, trl.SFTConfig, max_length=100),
            train_dataset=to_dataset(build_dir),
            processing_class=_tokenizer(),
        )


# ---------------------------------------------------------------------------------------------
# to_dataset
# ---------------------------------------------------------------------------------------------


def test_to_dataset_columns_and_rows(build_dir, rows):
    before = tree_bytes(build_dir)
    ds = to_dataset(build_dir)
    assert ds.column_names == ["input_ids", "attention_mask", "labels", "length", "seq_len"]
    assert all(ds.features[c] == datasets.List(datasets.Value("int32")) for c in COLUMNS)
    assert len(ds) == len(rows.rows) == 48
    shard_ds = load(build_dir)
    for i in range(len(ds)):
        r = ds[i]
        assert r["seq_len"] == len(r["input_ids"]) == shard_ds.seq_len_of(i)
        assert r["length"] == len(rows.rows[i].ids) == sum(r["attention_mask"])
        for c in COLUMNS:
            assert r[c] == shard_ds[i][c].tolist()
    assert tree_bytes(build_dir) == before


def test_to_dataset_without_padding(build_dir, rows, left_dir):
    ds = to_dataset(build_dir, padded=False)
    for i, r in enumerate(ds):
        assert r["input_ids"] == rows.rows[i].ids.tolist() and r["labels"] == rows.rows[i].labels.tolist()
        assert r["attention_mask"] == [1] * r["length"] and r["seq_len"] == rows.rows[i].seq_len
    left = to_dataset(left_dir, padded=False)  # left padding removed: the same rows
    assert left["input_ids"] == ds["input_ids"] and left["labels"] == ds["labels"]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_to_dataset_is_memory_mapped(build_dir):
    ds = to_dataset(build_dir)
    maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(".arrow")]
    spans = {Path(m[-1]).name: tuple(int(x, 16) for x in m[0].split("-")) for m in maps if str(build_dir) in m[-1]}
    for chunk in ds.data.column("input_ids").chunks:
        address = chunk.values.buffers()[1].address
        assert any(lo <= address < hi for lo, hi in spans.values()), "input_ids are not the shard's memory map"


def test_datasets_operations_write_nothing_into_the_build(build_dir):
    before = tree_bytes(build_dir)
    ds = to_dataset(build_dir)
    ds.map(lambda r: {"n": len(r["input_ids"])})
    ds.filter(lambda r: r["length"] > 50)
    ds.shuffle(seed=0).flatten_indices()
    ds.cast_column("length", datasets.Value("int64"))
    to_dataset(build_dir, padded=False).map(lambda r: r, batched=True)
    assert tree_bytes(build_dir) == before
    assert sorted(p.name for p in build_dir.glob("*.arrow")) == sorted(n for n in before if n.endswith(".arrow"))


def test_to_dataset_of_a_shard_dataset_and_an_empty_build(build_dir, tmp_path):
    assert to_dataset(load(build_dir))["input_ids"] == to_dataset(build_dir)["input_ids"]
    empty = tmp_path / "empty"
    run_build([SAMPLE / "chat.jsonl"], SAMPLE / "tokenizer", empty, max_length=5, allow_empty=True)
    ds = to_dataset(empty)
    assert len(ds) == 0 and ds.column_names == ["input_ids", "attention_mask", "labels", "length", "seq_len"]


def test_bucket_indices_follow_the_seq_len_column(build_dir):
    ds = to_dataset(build_dir)
    expected = {k: v.tolist() for k, v in load(build_dir).bucket_indices().items()}
    assert {k: v.tolist() for k, v in bucket_indices(ds).items()} == expected
    assert {k: v.tolist() for k, v in bucket_indices(ds.remove_columns(["seq_len", "length"])).items()} == expected
    picked = ds.select([40, 2, 17])  # an indices mapping: buckets of the selected rows, by their new positions
    assert {k: v.tolist() for k, v in bucket_indices(picked).items()} == _positions(build_dir, [40, 2, 17])


def _positions(build: Path, picked: list[int]) -> dict[int, list[int]]:
    ds, out = load(build), {}
    for pos, i in enumerate(picked):
        out.setdefault(ds.seq_len_of(i), []).append(pos)
    return out


# ---------------------------------------------------------------------------------------------
# Rows mode and pad_collate
# ---------------------------------------------------------------------------------------------


def test_random_batches_raise_without_rows_and_re_pad_with_pad_collate(build_dir, rows):
    plain = DataLoader(load(build_dir), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"different lengths .*pad_collate"):
        list(plain)
    ds = load(build_dir, rows=True)
    loader = DataLoader(
        ds,
        batch_size=8,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        collate_fn=partial(pad_collate, pad_id=ds.pad_id),
    )
    seen, mixed = [], 0
    for batch in loader:
        ids, mask, labels = (batch[c].numpy() for c in COLUMNS)
        found = [rows.match(ids[k], labels[k]) for k in range(len(ids))]
        lengths = [len(rows.rows[i].ids) for i in found]
        assert ids.shape[1] == max(lengths)  # re-padded to the longest row of this batch
        for k, n in enumerate(lengths):
            assert np.all(mask[k, :n] == 1) and np.all(mask[k, n:] == 0)
            assert np.all(ids[k, n:] == ds.pad_id) and np.all(labels[k, n:] == IGNORE_INDEX)
        if len({rows.rows[i].seq_len for i in found}) > 1:
            mixed += 1
            with pytest.raises(AssertionError, match="mixes buckets"):  # what the trainer tests would catch
                rows.check_batch(batch)
        seen += found
    assert sorted(seen) == list(range(len(ds))) and mixed > 0


def test_pad_collate_moves_left_padding_by_position(left_dir, build_dir):
    left, right = load(left_dir), load(build_dir)
    idx = left.bucket_indices()[700][:5].tolist()
    to_right = pad_collate(left.get_batch(idx), pad_id=left.pad_id)
    assert all(torch.equal(to_right[c], pad_collate(right.get_batch(idx), pad_id=right.pad_id)[c]) for c in COLUMNS)
    to_left = pad_collate(right.as_rows().get_rows(idx), pad_id=right.pad_id, padding_side="left")
    trimmed = {c: left.get_batch(idx)[c][:, -to_left[c].shape[1] :].long() for c in COLUMNS}
    assert all(torch.equal(to_left[c], trimmed[c]) for c in COLUMNS)
    # pad == eos: padding is placed by position, so the real eos (the same id) keeps its label.
    assert left.pad_id == 2 and bool((to_right["labels"] == 2).any())
    assert pad_collate([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}], pad_id=0, pad_to_multiple_of=4)[
        "attention_mask"
    ].tolist() == [
        [1, 1, 1, 0],
        [1, 0, 0, 0],
    ]


def test_rows_mode_feeds_hf_collators(build_dir):
    ds = load(build_dir, rows=True)
    assert ds.__getitems__([0, 1])[0].keys() == set(COLUMNS)
    sampler = BucketBatchSampler(ds, batch_size=4, seed=1)
    seq2seq = transformers.DataCollatorForSeq2Seq(_tokenizer(), label_pad_token_id=IGNORE_INDEX)
    remove = transformers.trainer_utils.RemoveColumnsCollator(
        transformers.default_data_collator, signature_columns=["input_ids", "labels"], logger=None, description="test"
    )
    for batch_idx, a, b in zip(
        sampler,
        DataLoader(ds, batch_sampler=sampler, collate_fn=seq2seq),
        DataLoader(ds, batch_sampler=sampler, collate_fn=remove),
    ):
        ours = collate(load(build_dir).get_batch(batch_idx))
        assert all(torch.equal(a[c], ours[c]) for c in COLUMNS)
        assert set(b) == {"input_ids", "labels"} and torch.equal(b["labels"], ours["labels"])


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_plain_trainer_with_a_random_sampler_and_pad_collate(build_dir, rows, tmp_path, one_thread):
    """No mixin: Trainer's own random sampler over rows, re-padded per batch (the graceful fallback)."""
    ds = load(build_dir, rows=True)

    class Plain(transformers.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.batches = []

        def compute_loss(self, model, inputs, *args, **kwargs):
            self.batches.append({k: v.clone() for k, v in inputs.items()})
            return super().compute_loss(model, inputs, *args, **kwargs)

    trainer = Plain(
        model=tiny_llama(),
        args=_args(tmp_path, max_steps=4),
        train_dataset=ds,
        data_collator=partial(pad_collate, pad_id=ds.pad_id),
    )
    trainer.train()
    for batch in trainer.batches:
        found = [rows.match(batch["input_ids"][k].numpy(), batch["labels"][k].numpy()) for k in range(len(batch["input_ids"]))]
        assert batch["input_ids"].shape[1] == max(len(rows.rows[i].ids) for i in found)


# ---------------------------------------------------------------------------------------------
# Distributed: accelerate's sharding wrapper, and two real processes
# ---------------------------------------------------------------------------------------------


class _ShardingAccelerator:
    """What ``accelerator.prepare`` does to a map-style loader under DDP: wraps its batch sampler in ``BatchSamplerShard``."""

    def __init__(self, num_processes: int, process_index: int):
        from accelerate.data_loader import BatchSamplerShard

        self.wrap = partial(BatchSamplerShard, num_processes=num_processes, process_index=process_index)

    def prepare(self, loader: DataLoader) -> DataLoader:
        return DataLoader(loader.dataset, batch_sampler=self.wrap(loader.batch_sampler), collate_fn=loader.collate_fn)


def test_accelerate_sharding_wrapper_is_a_pass_through(build_dir):
    from padprep.train.hf import _prepare_unsharded

    ds = load(build_dir)
    sampler = BucketBatchSampler(ds, batch_size=3, seed=0, rank=1, world_size=2)
    mine = [list(b) for b in sampler]
    assert any(len(b) < 3 for b in mine)  # a bucket's last, short batch: what the wrapper would hold back
    wrapped = _ShardingAccelerator(2, 1).prepare(DataLoader(ds, batch_sampler=sampler, collate_fn=collate))
    assert [list(b) for b in wrapped.batch_sampler] != mine  # left alone, accelerate re-splits and drops
    prepared = _prepare_unsharded(_ShardingAccelerator(2, 1), DataLoader(ds, batch_sampler=sampler, collate_fn=collate), sampler)
    assert len(prepared) == len(mine) and [list(b) for b in prepared.batch_sampler] == mine
    prepared.batch_sampler.set_epoch(4)
    assert sampler.epoch == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_get_their_own_equal_batches(build_dir, rows, tmp_path):
    """DDP through accelerate (torchrun, gloo, CPU): each rank trains on exactly its share of padprep's batches."""
    out, before = tmp_path / "ddp", tree_bytes(build_dir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(ROOT / "tests" / "support" / "hf_ddp_train.py"),
        str(build_dir),
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ds = load(build_dir)
    per_rank = []
    for rank in (0, 1):
        batches = torch.load(out / f"rank{rank}.pt")
        got = [rows.check_batch(b) for b in batches]
        sampler = BucketBatchSampler(ds, batch_size=BATCH, seed=SEED, rank=rank, world_size=2)
        expected = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            expected += list(sampler)
        assert got == expected and got[: len(got) // 2] != got[len(got) // 2 :]
        per_rank.append(got)
    assert len(per_rank[0]) == len(per_rank[1]) > 0
    first_epoch = [{i for b in r[: len(r) // 2] for i in b} for r in per_rank]
    assert first_epoch[0] | first_epoch[1] == set(range(len(ds)))
    assert tree_bytes(build_dir) == before


# ---------------------------------------------------------------------------------------------
# Optional dependencies
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_padprep_works_without_the_hf_libraries(build_dir):
    """transformers, datasets and trl stay optional: padprep, its CLI and padprep.train.hf import without them."""
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("transformers", "datasets", "trl", "accelerate"):
                    raise ImportError(f"blocked {{name}}")
        sys.meta_path.insert(0, Block())
        import padprep, padprep.cli, padprep.train.hf, padprep.train.loader
        assert len(padprep.load({str(build_dir)!r})) == 48
        try:
            padprep.train.hf.to_dataset({str(build_dir)!r})
        except ImportError as e:
            print(e)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "to_dataset needs `datasets`, which is not installed (pip install datasets)" in done.stdout
