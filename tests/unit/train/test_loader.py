"""padprep.train.loader against the real files, torch's DataLoader, HuggingFace datasets and a tiny Llama."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from padprep.layout.shards import file_sha256
from padprep.schema import COLUMNS, IGNORE_INDEX
from padprep.train.loader import BucketBatchSampler, ShardDataset, collate, load, make_dataloader, position_ids
from tests.support.hf import tiny_llama

# Explicit bounds give several shards per bucket (shard_tokens is small) and wide padding in the
# 700 bucket, which the left-padding test needs.


@pytest.fixture(scope="module")
def ds(right_dir) -> ShardDataset:
    return load(right_dir)


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _arrow_columns(path: Path) -> dict[str, np.ndarray]:
    """A shard read with plain pyarrow (no padprep code), as (rows, seq_len) arrays."""
    with pa.OSFile(str(path), "rb") as fh:
        table = pa.ipc.open_stream(fh).read_all()
    return {c: np.stack(table.column(c).to_pylist()) for c in COLUMNS}


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------


def test_rows_equal_shard_contents(ds, right_dir):
    manifest = _manifest(right_dir)
    assert len(ds) == sum(s["rows"] for s in manifest["shards"]) == 48
    assert len({s["seq_len"] for s in manifest["shards"]}) < len(manifest["shards"])  # several shards per bucket
    i = 0
    for k, shard in enumerate(manifest["shards"]):
        expected = _arrow_columns(right_dir / shard["file"])
        whole = ds[i : i + shard["rows"]]
        for c in COLUMNS:
            assert whole[c].shape == (shard["rows"], shard["seq_len"])
            np.testing.assert_array_equal(whole[c].numpy(), expected[c])
        for r in range(shard["rows"]):
            row = ds[i + r]
            assert ds.shard_of(i + r) == k and ds.seq_len_of(i + r) == shard["seq_len"]
            for c in COLUMNS:
                assert row[c].shape == (shard["seq_len"],) and row[c].dtype == torch.int32
                np.testing.assert_array_equal(row[c].numpy(), expected[c][r])
        i += shard["rows"]
    assert ds.padding_side == "right" and ds.pad_id == manifest["tokenizer"]["pad_id"]


def _file_mappings(path: Path) -> list[tuple[int, int]]:
    lines = Path("/proc/self/maps").read_text().splitlines()
    spans = [line.split()[0] for line in lines if line.endswith(" " + str(path.resolve()))]
    return [tuple(int(x, 16) for x in span.split("-")) for span in spans]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_rows_are_views_of_the_memory_mapped_file(right_dir):
    ds = load(right_dir)  # fresh: maps opened by this test
    first = ds.bucket_indices()[700][:4]
    path = ds.shards[ds.shard_of(int(first[0]))].path
    rows = [ds[int(i)]["input_ids"] for i in first if ds.shards[ds.shard_of(int(i))].path == path]
    assert len(rows) >= 2
    mappings = _file_mappings(path)
    assert mappings, "the shard file is not memory-mapped"
    for t in rows:
        assert any(lo <= t.data_ptr() < hi for lo, hi in mappings)
    # Same row twice: the same memory, not a fresh copy; a slice starts where its first row does.
    assert ds[int(first[0])]["input_ids"].data_ptr() == rows[0].data_ptr()
    whole = ds[int(first[0]) : int(first[0]) + len(rows)]["input_ids"]
    assert whole.data_ptr() == rows[0].data_ptr() and whole.shape == (len(rows), 700)
    # Consecutive rows sit back to back, as in the file: views of one column, no per-row allocation.
    assert rows[1].data_ptr() - rows[0].data_ptr() == 700 * rows[0].element_size()


def test_writes_into_tensors_stay_private(right_dir):
    ds = load(right_dir)
    shard = _manifest(right_dir)["shards"][0]
    before = ds[0]["input_ids"].clone()
    ds[0]["input_ids"].add_(1)  # copy-on-write map: no crash, no change to the file
    assert torch.equal(ds[0]["input_ids"], before + 1)
    assert file_sha256(right_dir / shard["file"]) == shard["sha256"]
    assert torch.equal(load(right_dir)[0]["input_ids"], before)


def test_get_batch_gathers_across_shards_in_order(ds):
    rows_700 = ds.bucket_indices()[700]
    assert len({ds.shard_of(int(i)) for i in rows_700}) > 1
    pick = np.random.default_rng(0).permutation(rows_700)[:7]
    batch = ds.get_batch(pick)
    for c in COLUMNS:
        assert batch[c].shape == (7, 700)
        assert torch.equal(batch[c], torch.stack([ds[int(i)][c] for i in pick]))
    assert torch.equal(ds.__getitems__(list(pick))["labels"], batch["labels"])
    assert torch.equal(ds[torch.as_tensor(pick)]["labels"], batch["labels"])
    with pytest.raises(ValueError, match="different lengths"):
        ds.get_batch([int(ds.bucket_indices()[64][0]), int(rows_700[0])])
    with pytest.raises(IndexError):
        ds.get_batch([len(ds)])


def test_load_refuses_a_directory_without_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load(tmp_path)


def test_dataset_pickles_small_and_reopens(ds):
    ds[0]  # maps open in this process
    blob = pickle.dumps(ds)
    assert len(blob) < 10_000
    again = pickle.loads(blob)
    for i in (0, 20, len(ds) - 1):
        assert torch.equal(again[i]["labels"], ds[i]["labels"])


# ---------------------------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------------------------


def test_sampler_batches_one_bucket_and_every_row_once(ds):
    sampler = BucketBatchSampler(ds, batch_size=4, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        assert len({ds.seq_len_of(i) for i in batch}) == 1 and 1 <= len(batch) <= 4
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(ds)))


def test_sampler_order_depends_on_seed_and_epoch_only(ds):
    def order(seed: int, epoch: int) -> list[list[int]]:
        sampler = BucketBatchSampler(ds, batch_size=3, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 0) == order(0, 0)
    assert order(0, 1) == order(0, 1)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    # Shuffled across buckets too: batch seq_lens are not in ascending order.
    lens = [ds.seq_len_of(b[0]) for b in order(0, 0)]
    assert lens != sorted(lens)
    plain = list(BucketBatchSampler(ds, batch_size=3, shuffle=False))
    assert [i for b in plain for i in b] == [i for rows in ds.bucket_indices().values() for i in rows.tolist()]


@pytest.mark.parametrize("drop_last", [False, True])
def test_token_budget(ds, drop_last):
    budget = 640
    sampler = BucketBatchSampler(ds, max_tokens=budget, drop_last=drop_last)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    sizes = {}
    for batch in batches:
        seq_len = ds.seq_len_of(batch[0])
        assert len(batch) * seq_len <= budget or len(batch) == 1
        sizes.setdefault(seq_len, set()).add(len(batch))
    assert max(sizes[64]) == budget // 64 > max(sizes[256]) == budget // 256  # short buckets: more rows
    seen = sorted(i for b in batches for i in b)
    if drop_last:
        assert len(seen) == len(set(seen)) < len(ds)  # each bucket's partial batch dropped
    else:
        assert seen == list(range(len(ds)))
    assert BucketBatchSampler(ds, batch_size=5, max_tokens=budget).rows_per_batch(64) == 5  # capped


@pytest.mark.parametrize("batch_size,drop_last", [(4, False), (4, True), (3, False), (5, True)])
def test_distributed_ranks_equal_and_disjoint(ds, batch_size, drop_last):
    ranks = [BucketBatchSampler(ds, batch_size=batch_size, drop_last=drop_last, seed=7, rank=r, world_size=2) for r in (0, 1)]
    for epoch in (0, 1):
        for s in ranks:
            s.set_epoch(epoch)
        batches = [list(s) for s in ranks]
        assert len(batches[0]) == len(batches[1]) == len(ranks[0]) == len(ranks[1])
        total = ranks[0].epoch_batches()
        rows = [{i for b in rb for i in b} for rb in batches]
        if drop_last or len(total) % 2 == 0:
            assert not rows[0] & rows[1]
        if not drop_last:
            assert rows[0] | rows[1] == set(range(len(ds)))  # padding repeats batches, never loses rows
        for rb in batches:
            for b in rb:
                assert len({ds.seq_len_of(i) for i in b}) == 1


@pytest.mark.parametrize("context", [None, "spawn"])  # None: the platform default (fork on Linux)
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_dataloader_workers_give_the_same_batches(right_dir, context):
    """Workers open their own maps (fork) or unpickle the dataset and reopen them (spawn)."""

    def batches(workers: int) -> list[dict]:
        ds = load(right_dir)
        sampler = BucketBatchSampler(ds, max_tokens=700, seed=1)
        sampler.set_epoch(2)
        options = {"multiprocessing_context": context} if workers and context else {}
        loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate, **options)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) > 0
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys() == set(COLUMNS)
        for c in COLUMNS:
            assert a[c].dtype == torch.long and torch.equal(a[c], b[c])


def test_make_dataloader_and_collate_of_rows(right_dir):
    loader = make_dataloader(right_dir, batch_size=4, seed=5)
    loader.batch_sampler.set_epoch(1)
    got = list(loader)
    assert len(got) == len(loader)
    assert sum(b["input_ids"].shape[0] for b in got) == 48
    ds = loader.dataset
    rows = [ds[i] for i in (0, 1, 2)]
    assert torch.equal(collate(rows)["labels"], collate(ds.get_batch([0, 1, 2]))["labels"])


# ---------------------------------------------------------------------------------------------
# HuggingFace datasets
# ---------------------------------------------------------------------------------------------


def _rows_of(ds: ShardDataset, path: Path) -> range:
    k = [s.path for s in ds.shards].index(path)
    return range(int(ds._starts[k]), int(ds._starts[k + 1]))


def test_hf_dataset_from_file_gives_the_same_tensors(ds, right_dir):
    datasets = pytest.importorskip("datasets")
    for shard in _manifest(right_dir)["shards"][:3]:
        path = right_dir / shard["file"]
        hf = datasets.Dataset.from_file(str(path)).with_format("torch")
        ours = ds.get_batch(list(_rows_of(ds, path)))
        assert len(hf) == shard["rows"]
        for c in COLUMNS:
            assert torch.equal(hf[:][c], ours[c].long())
            assert torch.equal(hf[1][c], ours[c][1].long())


def test_hf_load_dataset_arrow_gives_the_same_tensors(ds, right_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    files = [right_dir / s["file"] for s in _manifest(right_dir)["shards"] if s["seq_len"] == 700]
    assert len(files) > 1  # one bucket (one fixed length) across several shards
    hf = datasets.load_dataset("arrow", data_files=[str(f) for f in files], split="train", cache_dir=str(tmp_path))
    hf = hf.with_format("torch")
    ours = ds.get_batch(ds.bucket_indices()[700])
    rows = hf[:]
    for c in COLUMNS:
        assert torch.equal(rows[c], ours[c].long())


# ---------------------------------------------------------------------------------------------
# A tiny causal transformer on the shards
# ---------------------------------------------------------------------------------------------


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Shifted cross entropy as transformers computes it: position t predicts label t + 1."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_tiny_llama_trains_on_the_shards(right_dir, one_thread):
    model = tiny_llama()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = make_dataloader(right_dir, max_tokens=512, seed=0)
    losses: list[float] = []
    epoch = 0
    while len(losses) < 30:
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = causal_lm_loss(logits, batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == 30:
                break
        epoch += 1
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert np.isfinite(losses).all()
    assert last < first - 1.0, f"loss did not go down: {first:.3f} -> {last:.3f}"


def test_loss_matches_transformers_and_masked_positions_carry_no_gradient(right_dir, one_thread):
    model = tiny_llama(seed=1)
    ds = load(right_dir)
    batch = collate(ds.get_batch(ds.bucket_indices()[256][:4]))
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    logits = out.logits
    logits.retain_grad()
    loss = causal_lm_loss(logits, batch["labels"])
    torch.testing.assert_close(loss, out.loss)  # the same convention as transformers' own loss
    loss.backward()
    grad = logits.grad
    # Position t is scored against labels[t + 1]; the last position has no target.
    target = torch.cat([batch["labels"][:, 1:], torch.full_like(batch["labels"][:, :1], IGNORE_INDEX)], dim=1)
    masked = target == IGNORE_INDEX
    assert masked.any() and (~masked).any()
    assert batch["attention_mask"].eq(0).any()  # padding is among the masked positions
    assert torch.count_nonzero(grad[masked]) == 0
    assert torch.all(grad[~masked].abs().sum(-1) > 0)  # every trained position does get a gradient


def test_left_padding_batched_prediction_equals_unpadded(left_dir, one_thread):
    model = tiny_llama(seed=2).eval()
    ds = load(left_dir)
    assert ds.padding_side == "left"
    batch = collate(ds.get_batch(ds.bucket_indices()[700][:5]))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert torch.all(mask[:, -1] == 1), "left padding: the last position is each row's last real token"
    assert len(set(mask.sum(1).tolist())) > 1 and (mask[:, 0] == 0).any()
    pos = position_ids(mask)
    assert torch.equal(pos[:, -1], mask.sum(1) - 1)
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        pads_seen = model(input_ids=ids, position_ids=pos).logits[:, -1]  # no mask: pads are attended
        for r in range(len(ids)):
            alone = model(input_ids=ids[r][mask[r].bool()][None]).logits[0, -1]
            torch.testing.assert_close(batched[r], alone, atol=1e-4, rtol=0)
            assert batched[r].argmax() == alone.argmax()
    padded = mask[:, 0] == 0
    assert not torch.allclose(pads_seen[padded], batched[padded], atol=1e-4)  # the check has teeth
