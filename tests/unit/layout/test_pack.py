"""``build --pack``: placement, packed shards, inspect, the loader's batches and a tiny Llama on them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import padprep.layout.pass_two as pass_two
from padprep.config import BuildConfig
from padprep.layout.pack import best_fit_decreasing
from padprep.layout.shards import read_shard
from padprep.output.inspection import load_stats, verify_shards
from padprep.schema import IGNORE_INDEX
from padprep.train.loader import PackedCollator, block_diagonal_mask, cu_seq_lens_from_position_ids, load, make_dataloader
from tests.conftest import (
    SAMPLE,
    alpaca_to_messages,
    padprep_cli,
    run_build,
    shared_file,
    sharegpt_to_messages,
    tree_bytes,
    unpadded_rows,
    write_jsonl,
)
from tests.support.data import mixed_input

TOK = SAMPLE / "tokenizer"
CHAT = SAMPLE / "chat.jsonl"
L = 512  # the sample's longest conversation is 600 tokens: one is dropped at 512, the rest pack
VOCAB = 3072  # the sample tokenizer's


# ---------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------


def one_by_one_best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """The textbook algorithm, one conversation at a time: longest first (ties in input order), into
    the open bin with the least room that holds it (ties: the bin changed last), else a new bin."""
    free, changed, members, clock = [], [], [], 0
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        fits = [b for b in range(len(free)) if free[b] >= lengths[i]]
        if fits:
            best = min(fits, key=lambda b: (free[b], -changed[b]))
        else:
            free.append(capacity), changed.append(0), members.append([])
            best = len(free) - 1
        clock += 1
        free[best] -= lengths[i]
        changed[best] = clock
        members[best].append(i)
    return members


def bins_of(lengths, capacity) -> list[list[int]]:
    p = best_fit_decreasing(np.asarray(lengths), capacity)
    return [p.order[p.starts[b] : p.starts[b + 1]].tolist() for b in range(p.bins)]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40).flatmap(lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), max_size=80))))
def test_placement_is_exactly_one_by_one_best_fit_decreasing(case):
    capacity, lengths = case
    assert bins_of(lengths, capacity) == one_by_one_best_fit(lengths, capacity)


def test_placement_fills_rows_and_never_splits_or_loses_a_conversation():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(5.3, 0.9, 50_000).astype(np.int64), 1, 2048)
    p = best_fit_decreasing(lengths, 2048)
    assert sorted(p.order.tolist()) == list(range(len(lengths)))  # every conversation exactly once
    used = p.used(lengths)
    assert used.max() <= 2048 and np.array_equal(used, np.bincount(p.bin_of, weights=lengths).astype(np.int64))
    assert 1 - lengths.sum() / (p.bins * 2048) < 0.01
    again = best_fit_decreasing(lengths.copy(), 2048)
    assert np.array_equal(again.order, p.order) and np.array_equal(again.starts, p.starts)
    with pytest.raises(ValueError, match="1..2048"):
        best_fit_decreasing(np.array([3, 2049]), 2048)
    with pytest.raises(ValueError, match="1..8"):
        best_fit_decreasing(np.array([0, 3]), 8)
    assert best_fit_decreasing(np.zeros(0, np.int64), 8).bins == 0


# ---------------------------------------------------------------------------------------------
# Packed shards on the sample data
# ---------------------------------------------------------------------------------------------


def sequences(out: Path) -> list[tuple[tuple, tuple]]:
    """Every packed row split back by seq_lens: (input_ids, labels) of each sequence.

    Also checks what splitting relies on: position_ids restart at 0 at every sequence and count the
    padding tail from 0, attention_mask covers exactly the sequences.
    """
    manifest = json.loads((out / "manifest.json").read_text())
    found = []
    for shard in manifest["shards"]:
        cols = read_shard(out / shard["file"])
        offsets, seq_lens = cols["seq_lens_offsets"], cols["seq_lens"]
        for r in range(cols["input_ids"].shape[0]):
            start = 0
            for n in seq_lens[offsets[r] : offsets[r + 1]].tolist():
                assert np.array_equal(cols["position_ids"][r, start : start + n], np.arange(n))
                found.append(
                    (
                        tuple(cols["input_ids"][r, start : start + n].tolist()),
                        tuple(cols["labels"][r, start : start + n].tolist()),
                    )
                )
                start += n
            seq_len = cols["input_ids"].shape[1]
            assert np.array_equal(cols["attention_mask"][r], np.arange(seq_len) < start)
            assert np.array_equal(cols["position_ids"][r, start:], np.arange(seq_len - start))
            assert np.all(cols["labels"][r, start:] == IGNORE_INDEX)
    return found


def unpacked_with_first_label_masked(out: Path) -> list[tuple[tuple, tuple]]:
    rows = []
    for ids, labels in unpadded_rows(out):
        labels = labels.copy()
        labels[0] = IGNORE_INDEX
        rows.append((tuple(ids.tolist()), tuple(labels.tolist())))
    return rows


@pytest.fixture(scope="module")
def sample_builds(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pack")
    run_build([CHAT], TOK, root / "bucketed", max_length=L)
    run_build([CHAT], TOK, root / "packed", max_length=L, pack=True, shard_tokens=2 * L)
    return root / "bucketed", root / "packed"


def test_packed_rows_hold_exactly_the_bucketed_rows(sample_builds):
    bucketed, packed = sample_builds
    manifest = json.loads((packed / "manifest.json").read_text())
    assert Counter(sequences(packed)) == Counter(unpacked_with_first_label_masked(bucketed))
    assert manifest["format"] == "padprep-packed-shards/1" and manifest["options"]["pack"] is True
    schema = pa.ipc.open_stream(pa.OSFile(str(packed / manifest["shards"][0]["file"]))).schema
    for name in ("input_ids", "attention_mask", "labels", "position_ids"):
        assert schema.field(name).type == pa.list_(pa.int32(), L)
    assert schema.field("seq_lens").type == pa.list_(pa.int32())
    # the manifest's packing record agrees with the shards
    packing, shards = manifest["packing"], manifest["shards"]
    assert packing["sequences"] == sum(s["sequences"] for s in shards) == manifest["totals"]["rows_written"] == 47
    assert packing["rows"] == sum(s["rows"] for s in shards) and all(s["rows"] <= 2 for s in shards)
    real = manifest["totals"]["real_tokens"]
    assert packing["fill"] == pytest.approx(real / (packing["rows"] * L))
    assert all(s["fill"] == pytest.approx(s["real_tokens"] / (s["rows"] * L)) for s in shards)
    # the trained count is the bucketed one less the first labels that were trained there (none: prompts)
    assert (
        manifest["totals"]["trained_tokens"] == json.loads((bucketed / "manifest.json").read_text())["totals"]["trained_tokens"]
    )


def test_pack_with_seed_shuffles_rows_and_keeps_them_whole(tmp_path, sample_builds):
    _, packed = sample_builds
    run_build([CHAT], TOK, tmp_path / "s", max_length=L, pack=True, shard_tokens=8 * L, seed=5)
    assert Counter(sequences(tmp_path / "s")) == Counter(sequences(packed))
    assert verify_shards(tmp_path / "s", load_stats(tmp_path / "s")) == []


def test_truncated_conversations_fill_whole_rows(tmp_path):
    manifest = run_build([CHAT], TOK, tmp_path / "t", max_length=128, truncation="right", pack=True)
    t = manifest["totals"]
    # right truncation keeps the first 128 tokens: where a long system prompt fills them, nothing is left to train
    assert t["truncated"] > 0 and t["rows_written"] + t["dropped"] == 48 and set(t["reasons"]) <= {"no_trained_token"}
    cols = [read_shard(tmp_path / "t" / s["file"]) for s in manifest["shards"]]
    assert sum(int((c["seq_lens"] == 128).sum()) for c in cols) == manifest["totals"]["truncated"]
    assert verify_shards(tmp_path / "t", load_stats(tmp_path / "t")) == []


def test_routing_through_groups_of_shards_gives_the_same_bytes(tmp_path, monkeypatch):
    """More shards than files open at once: rows go to groups of shards first, then to each shard."""
    run_build([CHAT], TOK, tmp_path / "direct", max_length=L, pack=True, shard_tokens=L)
    monkeypatch.setattr(pass_two, "_FANOUT", 2)
    manifest = run_build([CHAT], TOK, tmp_path / "grouped", max_length=L, pack=True, shard_tokens=L)
    assert len(manifest["shards"]) > 4  # three levels of routing with a fan-out of 2
    assert tree_bytes(tmp_path / "direct") == tree_bytes(tmp_path / "grouped")


@pytest.mark.parametrize("seed", [None, 3])
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_packed_output_is_byte_identical_whatever_the_workers(tmp_path, seed):
    src = mixed_input(tmp_path)
    trees = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        manifest = run_build(
            [src],
            TOK,
            out,
            workers=workers,
            chunk_size=5,
            max_length=256,
            pack=True,
            seed=seed,
            shard_tokens=1024,
            max_reject_rate=0.5,
        )
        assert manifest["totals"]["rejected"] > 0 and manifest["totals"]["dropped"] > 0 and len(manifest["shards"]) > 3
        trees[workers] = tree_bytes(out)
    assert trees[1] == trees[2] == trees[3]


# ---------------------------------------------------------------------------------------------
# The command line: usage errors, determinism, inspect
# ---------------------------------------------------------------------------------------------


def build_cli(out: Path, *extra: str):
    return padprep_cli("build", str(CHAT), "--tokenizer", str(TOK), "--output", str(out), *extra)


@pytest.mark.parametrize(
    "extra, says",
    [
        ((), "--pack needs --max-length"),
        (("--max-length", "512", "--buckets", "256,512"), "--pack and --buckets"),
        (("--max-length", "512", "--padding-side", "left"), "--padding-side left"),
        (("--max-length", "512", "--pad-to-multiple-of", "8"), "--pad-to-multiple-of"),
    ],
)
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_pack_usage_errors_are_one_line_exit_2(tmp_path, extra, says):
    res = build_cli(tmp_path / "o", "--pack", *extra)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("padprep: error: ") and says in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_pack_twice_is_byte_identical_then_up_to_date(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    res = build_cli(a, "--pack", "--max-length", "512", "--seed", "1")
    assert res.returncode == 0, res.stderr
    assert "47 sequences into" in res.stdout and "packing: 47 sequences into" in res.stderr
    assert build_cli(b, "--pack", "--max-length", "512", "--seed", "1").returncode == 0
    assert tree_bytes(a) == tree_bytes(b)
    again = build_cli(a, "--pack", "--max-length", "512", "--seed", "1")
    assert again.returncode == 0 and "is up to date" in again.stdout
    bucketed = build_cli(a, "--max-length", "512", "--seed", "1")  # not the same build: packing is in the key
    assert bucketed.returncode == 2 and "--overwrite" in bucketed.stderr


@pytest.mark.slow
def test_inspect_shows_boundaries_and_fill_and_verify_passes(tmp_path):
    out = tmp_path / "p"
    assert build_cli(out, "--pack", "--max-length", "512", "--shard-tokens", "1024").returncode == 0
    res = padprep_cli("inspect", str(out), "--verify", "--show", "16")
    assert res.returncode == 0, res.stderr
    assert "verify: ok" in res.stdout and "seq_lens, position_ids" in res.stdout
    assert "packed: 47 sequences in" in res.stdout and "packed shards" in res.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    for shard in manifest["shards"]:
        assert shard["file"] in res.stdout and f"{shard['fill']:.2%}" in res.stdout
    assert "<sequence 1/" in res.stdout and "<sequence 2/" in res.stdout  # several sequences in one row
    as_json = json.loads(padprep_cli("inspect", str(out), "--json").stdout)
    assert as_json["totals"]["sequences"] == 47 and len(as_json["packed_shards"]) == len(manifest["shards"])


def _rewrite(shard: Path, column: str, change) -> None:
    """Rewrite one column of a shard (keeping everything else), as a damaged or hand-edited file would be."""
    with pa.OSFile(str(shard), "rb") as fh:
        table = pa.ipc.open_stream(fh).read_all()
    i = table.schema.get_field_index(column)
    col = table.column(column).combine_chunks()
    if column == "seq_lens":
        values = np.array(col.values.to_pylist(), dtype=np.int32)
        new = pa.ListArray.from_arrays(col.offsets, pa.array(change(values), pa.int32()))
    else:
        values = np.array(col.flatten().to_pylist(), dtype=np.int32).reshape(len(col), -1)
        new = pa.FixedSizeListArray.from_arrays(pa.array(change(values).reshape(-1), pa.int32()), values.shape[1])
    table = table.set_column(i, table.schema.field(i), new)
    with pa.OSFile(str(shard), "wb") as fh, pa.ipc.new_stream(fh, table.schema) as writer:
        writer.write_table(table)


def _first_multi_sequence_shard(out: Path) -> Path:
    manifest = json.loads((out / "manifest.json").read_text())
    return out / next(s["file"] for s in manifest["shards"] if s["sequences"] > s["rows"])


def _tamper(column: str, cols: dict):
    """A change to ``column`` in the first row holding two sequences, each invisible to the bucketed checks."""
    offsets, seq_lens = cols["seq_lens_offsets"], cols["seq_lens"]
    r = int(np.flatnonzero(np.diff(offsets) >= 2)[0])
    first, boundary = int(offsets[r]), int(seq_lens[offsets[r]])

    def moved_boundary(lens):  # same total in the row: only where the second sequence starts moved
        lens = lens.copy()
        lens[first] -= 1
        lens[first + 1] += 1
        return lens

    def no_restart(positions):  # one running count over the row's sequences
        positions = positions.copy()
        positions[r, boundary:] = positions[r, boundary - 1] + 1 + np.arange(positions.shape[1] - boundary)
        return positions

    def trained_first_label(labels):  # the second sequence's first token trained: a prediction across the boundary
        labels = labels.copy()
        labels[r, boundary] = cols["input_ids"][r, boundary]
        return labels

    return {"seq_lens": moved_boundary, "position_ids": no_restart, "labels": trained_first_label}[column]


@pytest.mark.parametrize(
    "column, says",
    [
        ("seq_lens", "position_ids do not restart"),
        ("position_ids", "position_ids do not restart"),
        ("labels", "a sequence's first label is not -100"),
    ],
)
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_verify_catches_tampered_packing(tmp_path, column, says):
    out = tmp_path / "p"
    run_build([CHAT], TOK, out, max_length=L, pack=True)
    shard = _first_multi_sequence_shard(out)
    _rewrite(shard, column, _tamper(column, read_shard(shard)))
    res = padprep_cli("inspect", str(out), "--verify")
    assert res.returncode == 1
    assert f"{shard.name}: {says}" in res.stdout
    assert f"{shard.name}: sha256 differs from the manifest" in res.stdout
    # the sha256 alone would not say what is wrong: the packing checks do, on the columns themselves
    assert any(says in p for p in verify_shards(out, load_stats(out, [])) if "sha256" not in p)


def test_verify_catches_seq_lens_that_disagree_with_the_mask(tmp_path):
    out = tmp_path / "p"
    run_build([CHAT], TOK, out, max_length=L, pack=True)
    shard = _first_multi_sequence_shard(out)
    _rewrite(shard, "seq_lens", lambda s: np.concatenate(([s[0] - 1], s[1:])))
    problems = verify_shards(out, load_stats(out, []))
    assert f"{shard.name}: seq_lens do not add up to each row's attention_mask" in problems


# ---------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------


def _segments(cols: dict, rows: list[int]) -> list[int]:
    """Each row's sequences then its padding tail (when there is one), from seq_lens: the expected segment lengths."""
    out = []
    for r in rows:
        lens = cols["seq_lens"][cols["seq_lens_offsets"][r] : cols["seq_lens_offsets"][r + 1]].tolist()
        tail = cols["input_ids"].shape[1] - sum(lens)
        out += lens + ([tail] if tail else [])
    return out


def test_loader_varlen_batch_matches_seq_lens_and_transformers_flattening(sample_builds):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    _, packed = sample_builds
    ds = load(packed)
    assert ds.packed and "position_ids" in ds.columns
    loader = make_dataloader(packed, batch_size=2, shuffle=False)
    manifest = json.loads((packed / "manifest.json").read_text())
    batch = next(iter(loader))
    cols = read_shard(packed / manifest["shards"][0]["file"])
    rows = list(range(min(2, manifest["shards"][0]["rows"])))
    segments = _segments(cols, rows)
    assert "attention_mask" not in batch  # a 2-D mask would make flash attention ignore cu_seq_lens
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (1, len(rows) * L)
    assert batch["cu_seq_lens_q"].dtype == batch["cu_seq_lens_k"].dtype == torch.int32
    assert batch["cu_seq_lens_q"].tolist() == np.concatenate(([0], np.cumsum(segments))).tolist()
    assert torch.equal(batch["cu_seq_lens_k"], batch["cu_seq_lens_q"])
    assert batch["max_length_q"] == batch["max_length_k"] == max(segments)
    assert np.array_equal(batch["input_ids"].numpy().reshape(len(rows), L), cols["input_ids"][rows])
    # transformers infers the same boundaries from the position ids...
    (cu_q, cu_k), (max_q, _) = prepare_fa_kwargs_from_position_ids(batch["position_ids"])
    assert torch.equal(cu_q, batch["cu_seq_lens_q"]) and int(max_q) == batch["max_length_q"]
    # ...and its flattening collator, given each segment as an example, builds the same batch
    flat = transformers.DataCollatorWithFlattening(return_flash_attn_kwargs=True)
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    bounds = batch["cu_seq_lens_q"].tolist()
    features = [{"input_ids": ids[a:b].tolist(), "labels": labels[a:b].tolist()} for a, b in zip(bounds, bounds[1:])]
    theirs = flat(features)
    assert set(theirs) == set(batch)
    for key in ("input_ids", "labels", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k"):
        assert torch.equal(torch.as_tensor(theirs[key]), batch[key]), key
        assert torch.as_tensor(theirs[key]).dtype == batch[key].dtype, key
    assert theirs["max_length_q"] == batch["max_length_q"]


def test_loader_block_diagonal_mask(sample_builds):
    _, packed = sample_builds
    loader = make_dataloader(packed, batch_size=3, attention="block_diagonal", shuffle=False)
    batch = next(iter(loader))
    rows = batch["input_ids"].shape[0]
    mask = batch["attention_mask"]
    assert mask.shape == (rows, 1, L, L) and mask.dtype == torch.float32
    assert batch["position_ids"].shape == (rows, L) and batch["position_ids"].dtype == torch.int64
    for r in range(rows):  # brute force: same segment (positions restart at 0) and not in the future
        seg = np.cumsum(batch["position_ids"][r].numpy() == 0)
        q, k = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
        allowed = (seg[q] == seg[k]) & (k <= q)
        assert np.array_equal(mask[r, 0].numpy() == 0, allowed)
        assert np.all(mask[r, 0].numpy()[~allowed] == torch.finfo(torch.float32).min)
    as_bool = PackedCollator("block_diagonal", torch.bool)(load(packed).get_batch(list(range(rows))))["attention_mask"]
    assert as_bool.dtype == torch.bool and torch.equal(as_bool, mask == 0)  # the loader's first rows, unshuffled
    assert block_diagonal_mask(torch.tensor([[0, 1, 0]]), torch.bool)[0, 0].int().tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert cu_seq_lens_from_position_ids(torch.tensor([[0, 1, 2, 0, 1, 0]])).tolist() == [0, 3, 5, 6]


def test_loader_refuses_what_does_not_apply(sample_builds):
    bucketed, packed = sample_builds
    with pytest.raises(ValueError, match="for packed builds"):
        make_dataloader(bucketed, batch_size=2, attention="block_diagonal")
    with pytest.raises(ValueError, match="varlen"):
        make_dataloader(packed, batch_size=2, attention="flat")
    with pytest.raises(ValueError, match="position_ids"):
        PackedCollator()(load(bucketed).get_batch([0]))
    assert "attention_mask" in next(iter(make_dataloader(bucketed, batch_size=2)))  # bucketed batches are unchanged


def test_packed_batches_through_dataloader_workers(sample_builds):
    _, packed = sample_builds
    seen = Counter()
    loader = make_dataloader(packed, batch_size=3, num_workers=2, seed=1)
    for batch in loader:
        assert batch["cu_seq_lens_q"][-1] == batch["input_ids"].shape[1]
        seen[batch["input_ids"].shape[1] // L] += 1
    assert sum(k * v for k, v in seen.items()) == len(load(packed))


# ---------------------------------------------------------------------------------------------
# A tiny Llama: packed rows compute exactly what each sequence computes alone
# ---------------------------------------------------------------------------------------------


def tiny_llama(attn_implementation: str):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=L,
    )
    config._attn_implementation = attn_implementation
    return transformers.LlamaForCausalLM(config).eval()


def _sequences_of(batch_positions: torch.Tensor, row: int, real: int) -> list[tuple[int, int]]:
    starts = torch.nonzero(batch_positions[row] == 0).reshape(-1).tolist()
    return [(a, b) for a, b in zip(starts, starts[1:] + [batch_positions.shape[1]]) if a < real]


def _loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Position t predicts label t + 1 (labels unshifted), -100 ignored, summed."""
    return F.cross_entropy(
        logits[..., :-1, :].reshape(-1, logits.shape[-1]).double(),
        labels[..., 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_block_diagonal_rows_equal_each_sequence_alone(sample_builds, attn_implementation):
    bucketed, packed = sample_builds
    model = tiny_llama(attn_implementation)
    ds = load(packed)
    rows = [r for r in range(len(ds)) if int(ds[r]["attention_mask"].sum()) > 0][:4]
    batch = PackedCollator("block_diagonal")(ds.get_batch(rows))
    unpacked = {ids: labels for ids, labels in unpacked_original(bucketed)}
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits
        packed_loss = _loss_sum(logits, batch["labels"])
        alone_loss, compared = torch.zeros((), dtype=torch.float64), 0
        for k, r in enumerate(rows):
            for a, b in _sequences_of(batch["position_ids"], k, int(ds[r]["attention_mask"].sum())):
                ids = batch["input_ids"][k : k + 1, a:b]
                alone = model(input_ids=ids).logits  # no mask, positions 0.. : the sequence as trained unpacked
                torch.testing.assert_close(logits[k : k + 1, a:b], alone, rtol=0, atol=1e-5)
                labels = torch.as_tensor(unpacked[tuple(ids[0].tolist())]).long()[None]  # the bucketed build's labels
                alone_loss += _loss_sum(alone, labels)
                compared += 1
    assert compared > len(rows)  # rows hold several sequences
    torch.testing.assert_close(packed_loss, alone_loss, rtol=1e-6, atol=1e-6)
    # without the block-diagonal mask, a packed row is NOT its sequences alone: the test can fail
    with torch.no_grad():
        leaky = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=torch.ones_like(batch["input_ids"])
        ).logits
    assert not torch.allclose(leaky, logits, atol=1e-3)


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_readme_training_loop_on_packed_shards_learns(sample_builds):
    """The README's SDPA loop on packed shards: block-diagonal mask, restarted positions; the loss goes down."""
    _, packed = sample_builds
    model = tiny_llama("sdpa").train()
    loader = make_dataloader(packed, batch_size=4, seed=0, attention="block_diagonal")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for epoch in range(3):
        loader.batch_sampler.set_epoch(epoch)
        total = 0.0
        for batch in loader:
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
            ).logits
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE_INDEX)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total)
    assert losses[2] < losses[0] * 0.95


def unpacked_original(out: Path) -> list[tuple[tuple, list]]:
    return [(tuple(ids.tolist()), labels.tolist()) for ids, labels in unpadded_rows(out)]


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_varlen_batch_reaches_attention_as_transformers_passes_flash_kwargs(sample_builds):
    """The varlen batch, passed as it is (``model(**batch)``), reaches the attention function with
    ``cu_seq_lens_*`` / ``max_length_*``; a reference variable-length attention (what flash-attn's
    varlen kernel computes: causal attention within each segment) then gives each sequence's logits
    alone, and the model's own loss equals the per-sequence losses."""
    pytest.importorskip("transformers")
    from transformers import AttentionInterface

    calls = []

    def varlen_reference(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        cu, longest = kwargs["cu_seq_lens_q"], kwargs["max_length_q"]
        assert attention_mask is None and torch.equal(kwargs["cu_seq_lens_k"], cu) and query.shape[0] == 1
        assert cu.dtype == torch.int32 and int(cu[-1]) == query.shape[2] and int(cu.diff().max()) == longest
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
        out = torch.empty_like(query)
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
            out[:, :, a:b] = F.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling
            )
        calls.append(len(cu) - 1)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register("padprep_varlen_reference", varlen_reference)
    bucketed, packed = sample_builds
    model = tiny_llama("padprep_varlen_reference")
    ds = load(packed)
    batch = PackedCollator()(ds.get_batch([0, 1, 2]))
    unpacked = {ids: labels for ids, labels in unpacked_original(bucketed)}
    with torch.no_grad():
        out = model(**batch)
        reference = tiny_llama("eager")
        total, tokens = torch.zeros((), dtype=torch.float64), 0
        cu = batch["cu_seq_lens_q"].tolist()
        for a, b in zip(cu, cu[1:]):
            ids = batch["input_ids"][:, a:b]
            if tuple(ids[0].tolist()) not in unpacked:  # a padding tail
                continue
            alone = reference(input_ids=ids).logits
            torch.testing.assert_close(out.logits[:, a:b], alone, rtol=0, atol=1e-5)
            labels = torch.as_tensor(unpacked[tuple(ids[0].tolist())]).long()[None]
            total += _loss_sum(alone, labels)
            tokens += int((labels[:, 1:] != IGNORE_INDEX).sum())
    assert calls and calls[0] > 3
    torch.testing.assert_close(out.loss.double() * tokens, total, rtol=1e-5, atol=1e-4)  # the model's mean loss


# ---------------------------------------------------------------------------------------------
# Acceptance on the shared data
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_shared_data_packs_under_one_percent_padding_with_exactly_the_unpacked_rows(tmp_path, qwen_dir):
    glaive = json.loads(shared_file("glaive_toolcall_en_demo.json").read_text())
    alpaca = json.loads(shared_file("alpaca_en_demo.json").read_text())
    src = write_jsonl(
        tmp_path / "shared.jsonl", [sharegpt_to_messages(r) for r in glaive] + [alpaca_to_messages(r) for r in alpaca]
    )
    bucketed = run_build([src], qwen_dir, tmp_path / "bucketed", max_length=2048)
    packed = run_build([src], qwen_dir, tmp_path / "packed", max_length=2048, pack=True)
    t = packed["totals"]
    assert t["pad_tokens"] <= 0.01 * (t["real_tokens"] + t["pad_tokens"]), t["padding_fraction"]
    print(
        f"shared data packed at 2048: padding {t['padding_fraction']:.3%}, bucketed {bucketed['totals']['padding_fraction']:.3%}"
    )
    assert t["real_tokens"] == bucketed["totals"]["real_tokens"] and t["rows_written"] == bucketed["totals"]["rows_written"]
    assert packed["packing"]["sequences"] == t["rows_written"] == len(glaive) + len(alpaca) - t["dropped"] - t["rejected"]
    assert Counter(sequences(tmp_path / "packed")) == Counter(unpacked_with_first_label_masked(tmp_path / "bucketed"))
    assert verify_shards(tmp_path / "packed", load_stats(tmp_path / "packed")) == []


def test_config_rejects_pack_without_max_length():
    with pytest.raises(ValueError, match="--pack needs --max-length"):
        BuildConfig(inputs=(CHAT,), tokenizer=str(TOK), output=Path("x"), pack=True)
