"""A preference build in training: padprep.load gives pairs, to_dataset TRL's columns, and DPOTrainer with
PreferenceMixin trains on them as they are: every sequence it computes a loss on is prompt + chosen or
prompt + rejected of the build, with the completion mask exactly on the completion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import padprep
from padprep.train.loader import BucketBatchSampler
from padprep.train.pairs import PairDataset
from tests.conftest import SAMPLE, run_build, tree_bytes, write_jsonl
from tests.support.hf import quiet_args, tiny_llama

TOK = SAMPLE / "tokenizer"


def sample_pairs() -> list[dict]:
    """TRL-shaped pairs from the sample chats: the last reply chosen, the same reply reversed word by word rejected."""
    out = []
    for line in (SAMPLE / "chat.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        msgs = rec["messages"]
        last = msgs[-1]
        if last["role"] != "assistant" or not last.get("content") or last.get("tool_calls"):
            continue
        worse = " ".join(reversed(last["content"].split())) + " (unsure)"
        pair = {"prompt": msgs[:-1], "chosen": [last], "rejected": [{"role": "assistant", "content": worse}]}
        if rec.get("tools"):
            pair["tools"] = rec["tools"]
        out.append(pair)
    return out


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pairs")
    src = write_jsonl(tmp / "pairs.jsonl", sample_pairs())
    run_build([src], TOK, tmp / "out", buckets=(128, 256, 512, 1024), shard_tokens=1500, seed=1)
    return tmp / "out"


def _pairs(build: Path) -> set[tuple]:
    pairs = padprep.load(build)
    return {
        (tuple(p["prompt_ids"]), tuple(p["chosen_ids"]), tuple(p["rejected_ids"])) for p in (pairs[i] for i in range(len(pairs)))
    }


def _split(batch: dict, r: int) -> tuple[tuple, tuple]:
    """(prompt, completion) of a recorded row: real tokens by attention_mask, the completion where completion_mask is 1,
    which must be one run at the end of the real tokens."""
    real = batch["attention_mask"][r].bool()
    ids, completion = batch["input_ids"][r][real].tolist(), batch["completion_mask"][r][real].tolist()
    start = completion.index(1)
    assert completion == [0] * start + [1] * (len(ids) - start), "the completion mask is not exactly the completion"
    return tuple(ids[:start]), tuple(ids[start:])


def test_load_gives_pairs_in_buckets(pair_dir):
    pairs = padprep.load(pair_dir)
    manifest = json.loads((pair_dir / "manifest.json").read_text())
    assert isinstance(pairs, PairDataset) and len(pairs) == manifest["totals"]["rows_written"] > 20
    buckets = pairs.bucket_indices()
    for seq_len, idx in buckets.items():
        for i in idx:
            p = pairs[int(i)]
            assert len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) <= seq_len
    sampler = BucketBatchSampler(pairs, batch_size=4, seed=0)
    batches = list(sampler)
    assert sorted(int(i) for b in batches for i in b) == list(range(len(pairs)))
    owner = {int(i): n for n, idx in buckets.items() for i in idx}
    assert all(len({owner[int(i)] for i in b}) == 1 for b in batches)  # one bucket per batch


def test_to_dataset_has_trls_columns(pair_dir):
    pytest.importorskip("datasets")
    from padprep.train.hf import to_dataset

    ds = to_dataset(pair_dir)
    assert ds.column_names == ["prompt_ids", "chosen_ids", "rejected_ids", "seq_len"]
    assert {(tuple(r["prompt_ids"]), tuple(r["chosen_ids"]), tuple(r["rejected_ids"])) for r in ds} == _pairs(pair_dir)


@pytest.mark.slow
@pytest.mark.parametrize("precompute", [False, True])
def test_dpo_trainer_trains_on_the_build_as_it_is(pair_dir, tmp_path, precompute, one_thread):
    trl = pytest.importorskip("trl")
    transformers = pytest.importorskip("transformers")
    from padprep.train.hf import PreferenceMixin

    class Recording(PreferenceMixin, trl.DPOTrainer):
        batches: list = []

        def compute_loss(self, model, inputs, *args, **kwargs):
            type(self).batches.append({k: v.detach().cpu().clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
            return super().compute_loss(model, inputs, *args, **kwargs)

    Recording.batches = []
    before = tree_bytes(pair_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(TOK))
    tokenizer.pad_token = tokenizer.eos_token
    args = quiet_args(
        trl.DPOConfig,
        tmp_path / "run",
        per_device_train_batch_size=4,
        max_steps=6,
        max_length=None,
        learning_rate=1e-3,
        precompute_ref_log_probs=precompute,
        seed=0,
    )
    reference = None if precompute else tiny_llama()  # the same weights the policy starts from
    trainer = Recording(
        model=tiny_llama(), ref_model=reference, args=args, train_dataset=padprep.load(pair_dir), processing_class=tokenizer
    )
    trainer.train()
    build = padprep.load(pair_dir)
    sampler = BucketBatchSampler(build, batch_size=4, seed=0)  # what the mixin draws from (seed: args.seed)
    expected = [
        {
            (tuple(build[int(i)]["prompt_ids"]), tuple(build[int(i)]["chosen_ids"]), tuple(build[int(i)]["rejected_ids"]))
            for i in b
        }
        for b in list(sampler)[:6]
    ]
    got = []
    for batch in Recording.batches:
        half = len(batch["input_ids"]) // 2  # the chosen sequences, then the rejected ones, pair by pair
        pairs = set()
        for r in range(half):
            (prompt, chosen), (other, rejected) = (_split(batch, k) for k in (r, r + half))
            assert prompt == other  # both sides of a pair share its prompt, token for token
            pairs.add((prompt, chosen, rejected))
        got.append(pairs)
    assert got == expected  # every sequence is prompt + a side of the build's pair, batches as the sampler drew them
    assert tree_bytes(pair_dir) == before  # nothing written into the build


@pytest.mark.slow
def test_docs_recipe(tmp_path, one_thread):
    """docs/preference.md's DPOTrainer recipe, run as written (a tiny model, paths pointed at a fresh build)."""
    pytest.importorskip("trl")
    import re

    from tests.conftest import ROOT

    text = (ROOT / "docs" / "preference.md").read_text(encoding="utf-8")
    (code,) = re.findall(r"<!-- recipe: [^>]*-->\n```python\n(.*?)```", text, flags=re.S)
    run_build([write_jsonl(tmp_path / "pairs.jsonl", sample_pairs())], TOK, tmp_path / "out" / "pairs")
    code = code.replace('"out/', f'"{tmp_path}/out/').replace('"sample_data/', f'"{SAMPLE}/')
    scope = {"model": tiny_llama(), "ref_model": tiny_llama()}
    exec(compile(code, "docs/preference.md", "exec"), scope)
    assert scope["trainer"].state.global_step == 2 and type(scope["trainer"]).__name__ == "BucketDPOTrainer"
