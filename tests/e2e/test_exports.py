"""``padprep export``: each format read back by its own project's loader, row by row equal to padprep's shards.

Each trainer's reader is installed from PyPI (``make install-test``: the ``exports`` extra and
``tests/exports-requirements.txt``, whose readers come without their pinned dependencies; see
docs/exports.md). Where the reader imports a media library a text dataset never uses (llamafactory:
torchaudio), a stand-in module is put in its place for the import only.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import pytest

from padprep.config import PaddingSide
from padprep.layout.shards import read_shard
from padprep.output.export import export
from padprep.schema import IGNORE_INDEX
from tests.conftest import ROOT, SAMPLE, padprep_cli, run_build, tree_bytes, write_jsonl

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOK = SAMPLE / "tokenizer"


# --- the builds exported, and what padprep's own shards say each conversation is -------------------------------------


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("builds")
    chat = SAMPLE / "chat.jsonl"
    run_build([chat], TOK, root / "rows", buckets=(64, 128, 256, 700), shard_tokens=2000)
    run_build([chat], TOK, root / "packed", max_length=512, pack=True, shard_tokens=2048)
    run_build([chat], TOK, root / "left", buckets=(128, 700), padding_side=PaddingSide.left)
    q = [{"role": "user", "content": "What is the capital of France?"}]
    pairs = [
        {"prompt": q, "chosen": [{"role": "assistant", "content": c}], "rejected": [{"role": "assistant", "content": r}]}
        for c, r in [("Paris.", "Lyon."), ("It is Paris, on the Seine.", "Marseille."), ("Paris", "Nice, I think.")]
    ]
    run_build([write_jsonl(root / "pairs.jsonl", pairs)], TOK, root / "pairs")
    recipe = root / "mix.yaml"
    recipe.write_text(f"tokenizer: {TOK}\nseed: 3\nsources:\n  - path: {chat}\neval:\n  fraction: 0.25\n")
    done = padprep_cli("build", "--recipe", str(recipe), "--output", str(root / "mix"))
    assert done.returncode == 0, done.stderr
    return {"rows": root / "rows", "packed": root / "packed", "left": root / "left", "pairs": root / "pairs", "mix": root / "mix"}


def conversations(build: Path) -> list[tuple[list[int], list[int]]]:
    """Every conversation of a build as (input_ids, labels), padding removed, packed rows cut at ``seq_lens``:
    read from the shards here, independently of the export code."""
    manifest = json.loads((build / "manifest.json").read_text())
    out = []
    for shard in manifest["shards"]:
        cols = read_shard(build / shard["file"])
        for r, (ids, mask, labels) in enumerate(zip(cols["input_ids"], cols["attention_mask"], cols["labels"])):
            real = mask.astype(bool)
            ids, labels = ids[real].tolist(), labels[real].tolist()
            if "seq_lens" not in cols:
                out.append((ids, labels))
                continue
            offsets = cols["seq_lens_offsets"]
            start = 0
            for n in cols["seq_lens"][offsets[r] : offsets[r + 1]]:
                out.append((ids[start : start + n], labels[start : start + n]))
                start += n
            assert start == len(ids)
    return out


def trained(labels) -> list[int]:
    """Positions trained under padprep's convention (labels not shifted): label != -100."""
    return [i for i, t in enumerate(labels) if t != IGNORE_INDEX]


def check_rows(got: list[tuple[list[int], list[int]]], want: list[tuple[list[int], list[int]]]) -> None:
    assert len(got) == len(want)
    for (ids, labels), (want_ids, want_labels) in zip(got, want):
        assert list(ids) == want_ids
        assert list(labels) == want_labels
        assert trained(labels) == trained(want_labels) and trained(want_labels)


@pytest.mark.parametrize("fmt", ["axolotl", "llamafactory", "mds", "swift", "olmo-core", "megatron-packed"])
def test_export_is_deterministic_and_lists_its_files(builds, tmp_path, fmt):
    build = "packed" if fmt == "megatron-packed" else "rows"
    for name in ("a", "b"):
        export(builds[build], fmt, tmp_path / name)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    manifest = json.loads((tmp_path / "a" / "padprep-export.json").read_text())
    build_key = json.loads((builds[build] / "manifest.json").read_text())["build_key"]
    assert manifest["source"]["sides"][0]["build_key"] == build_key
    from padprep.layout.shards import file_sha256

    assert {f["path"]: f["sha256"] for f in manifest["files"]} == {
        p: file_sha256(tmp_path / "a" / p) for p in tree_bytes(tmp_path / "a") if p != "padprep-export.json"
    }


def test_dest_rules_one_line_exit_2_and_nothing_deleted(builds, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    done = padprep_cli("export", str(builds["rows"]), str(foreign), "--to", "axolotl", "--overwrite")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "not an export of padprep" in done.stderr
    assert (foreign / "notes.txt").read_text() == "mine"
    dest = tmp_path / "dest"
    assert padprep_cli("export", str(builds["rows"]), str(dest), "--to", "axolotl").returncode == 0
    again = padprep_cli("export", str(builds["rows"]), str(dest), "--to", "axolotl")
    assert again.returncode == 0 and "up to date" in again.stdout  # the same build's export, intact: nothing written
    other = padprep_cli("export", str(builds["rows"]), str(dest), "--to", "llamafactory")
    assert other.returncode == 2 and "--overwrite" in other.stderr and other.stderr.count("\n") == 1
    (dest / "extra.txt").write_text("mine")
    over = padprep_cli("export", str(builds["rows"]), str(dest), "--to", "llamafactory", "--overwrite")
    assert over.returncode == 2 and "extra.txt" in over.stderr and (dest / "extra.txt").is_file()
    (dest / "extra.txt").unlink()
    over = padprep_cli("export", str(builds["rows"]), str(dest), "--to", "llamafactory", "--overwrite")
    assert over.returncode == 0, over.stderr
    assert json.loads((dest / "padprep-export.json").read_text())["export"] == "llamafactory"
    inside = padprep_cli("export", str(builds["rows"]), str(builds["rows"] / "x"), "--to", "axolotl")
    assert inside.returncode == 2 and inside.stderr.count("\n") == 1
    url = padprep_cli("export", str(builds["rows"]), "s3://bucket/export", "--to", "axolotl")
    assert url.returncode == 2 and "local folder" in url.stderr and not (ROOT / "s3:").exists()
    unknown = padprep_cli("export", str(builds["rows"]), str(tmp_path / "u"), "--to", "nope")
    assert unknown.returncode == 2 and "axolotl" in unknown.stderr
    assert not [p for p in tmp_path.iterdir() if "padprep-export" in p.name]  # no partial folder left


def test_build_export_option_builds_then_exports(tmp_path):
    out, dest = tmp_path / "out", tmp_path / "lf"
    args = ("build", str(SAMPLE / "chat.jsonl"), "--tokenizer", str(TOK), "--output", str(out))
    bad = padprep_cli(*args, "--export", "nope:" + str(dest))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and not out.exists()  # refused before building
    done = padprep_cli(*args, "--export", f"llamafactory:{dest}", "--export", f"axolotl:{tmp_path / 'ax'}")
    assert done.returncode == 0, done.stderr
    assert json.loads((dest / "padprep-export.json").read_text())["export"] == "llamafactory"
    assert json.loads((tmp_path / "ax" / "padprep-export.json").read_text())["export"] == "axolotl"
    before = tree_bytes(dest)
    again = padprep_cli(*args, "--export", f"llamafactory:{dest}")
    assert again.returncode == 0 and again.stdout.count("up to date") == 2 and tree_bytes(dest) == before


def test_a_damaged_shard_is_refused(builds, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(builds["rows"], copy)
    shard = sorted(copy.glob("*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[-20] ^= 1
    shard.write_bytes(bytes(data))
    done = padprep_cli("export", str(copy), str(tmp_path / "out"), "--to", "axolotl")
    assert done.returncode == 1 and "sha256" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_a_failed_export_leaves_nothing_and_a_second_one_waits_its_turn(builds, tmp_path, monkeypatch):
    import fcntl

    from padprep.output.export import axolotl
    from padprep.output.ownership import OutputInTheWay

    calls = []

    def fail_on_second(chunk, columns=axolotl.COLUMNS):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C between two shards
        return real(chunk, columns)

    real = axolotl.sft_table
    monkeypatch.setattr(axolotl, "sft_table", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        export(builds["rows"], "axolotl", tmp_path / "ax")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no DEST, no partial folder, no lock file
    monkeypatch.setattr(axolotl, "sft_table", real)
    lock = tmp_path / ".ax.padprep-export-lock"
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(OutputInTheWay, match="another export"):
            export(builds["rows"], "axolotl", tmp_path / "ax")
    lock.unlink()
    export(builds["rows"], "axolotl", tmp_path / "ax")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ax"]


# --- axolotl -----------------------------------------------------------------------------------------------------------


def _axolotl_load(path: Path, split: str = "train"):
    """The dataset axolotl trains on for ``datasets: [{path: DEST}]`` (``split="test"``: ``test_datasets``), through
    its own loading step: it finds the rows already tokenized and applies no prompt strategy."""
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    pytest.importorskip("axolotl")
    from axolotl.utils.data.sft import _load_and_process_single_dataset
    from axolotl.utils.dict import DictDefault

    ds, prompter = _load_and_process_single_dataset(
        DictDefault({"path": str(path)}), DictDefault({}), tokenizer=None, split=split, seed=0
    )
    assert type(prompter).__name__ == "UnsupportedPrompter"  # axolotl's mark of a pre-tokenized dataset
    return ds


@pytest.mark.parametrize("build", ["rows", "packed", "left"])
def test_axolotl_reads_every_conversation_exactly(builds, tmp_path, build):
    export(builds[build], "axolotl", tmp_path / "ax")
    ds = _axolotl_load(tmp_path / "ax")
    assert all(m == [1] * len(i) for m, i in zip(ds["attention_mask"], ds["input_ids"]))
    check_rows(list(zip(ds["input_ids"], ds["labels"])), conversations(builds[build]))


def test_axolotl_recipe_sides_are_splits(builds, tmp_path):
    export(builds["mix"], "axolotl", tmp_path / "ax")
    for split, side in (("train", "train"), ("test", "eval")):
        ds = _axolotl_load(tmp_path / "ax", split=split)
        check_rows(list(zip(ds["input_ids"], ds["labels"])), conversations(builds["mix"] / side))


# --- LLaMA-Factory -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llamafactory():
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")  # it pins transformers <= 5.6; its loader is what is tested
    if "torchaudio" not in sys.modules and importlib.util.find_spec("torchaudio") is None:
        stand_in = types.ModuleType("torchaudio")
        stand_in.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stand_in  # imported by its media plugin only; text rows never reach it
    pytest.importorskip("llamafactory")
    import llamafactory.data.loader as loader

    return loader


def _lf_module(llamafactory, path: Path, stage: str = "sft") -> dict:
    from llamafactory.hparams import DataArguments

    return llamafactory.get_dataset(None, None, DataArguments(tokenized_path=str(path)), None, stage, None)


def _lf_collate(rows, pairwise: bool = False):
    """Batches through LLaMA-Factory's own collators (padding with -100 labels, as it trains)."""
    from llamafactory.data import PairwiseDataCollatorWithPadding, SFTDataCollatorWith4DAttentionMask
    from llamafactory.data.template import TEMPLATES
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(TOK))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token  # what its template fix does where none is set
    cls = PairwiseDataCollatorWithPadding if pairwise else SFTDataCollatorWith4DAttentionMask
    collator = cls(template=TEMPLATES["empty"], tokenizer=tokenizer, model=None, label_pad_token_id=IGNORE_INDEX, padding=True)
    return collator([dict(r) for r in rows])


@pytest.mark.parametrize("build", ["rows", "packed"])
def test_llamafactory_tokenized_path_reads_every_conversation_exactly(builds, tmp_path, build, llamafactory):
    export(builds[build], "llamafactory", tmp_path / "lf")
    ds = _lf_module(llamafactory, tmp_path / "lf")["train_dataset"]
    want = conversations(builds[build])
    check_rows(list(zip(ds["input_ids"], ds["labels"])), want)
    batch = _lf_collate([ds[i] for i in range(4)])
    for r in range(4):
        mask = batch["attention_mask"][r].bool()
        assert batch["input_ids"][r][mask].tolist() == want[r][0]
        assert batch["labels"][r][mask].tolist() == want[r][1]
        assert (batch["labels"][r][~mask] == IGNORE_INDEX).all()


def test_llamafactory_recipe_sides_are_train_and_validation(builds, tmp_path, llamafactory):
    export(builds["mix"], "llamafactory", tmp_path / "lf")
    module = _lf_module(llamafactory, tmp_path / "lf")
    for key, side in (("train_dataset", "train"), ("eval_dataset", "eval")):
        ds = module[key]
        check_rows(list(zip(ds["input_ids"], ds["labels"])), conversations(builds["mix"] / side))


def test_llamafactory_pairs_are_its_pairwise_columns(builds, tmp_path, llamafactory):
    import pyarrow as pa

    export(builds["pairs"], "llamafactory", tmp_path / "lf")
    ds = _lf_module(llamafactory, tmp_path / "lf", stage="rm")["train_dataset"]
    manifest = json.loads((builds["pairs"] / "manifest.json").read_text())
    want = []
    for shard in manifest["shards"]:
        with pa.memory_map(str(builds["pairs"] / shard["file"])) as src:
            want += pa.ipc.open_stream(src).read_all().to_pylist()
    assert len(ds) == len(want) == 3
    for row, pair in zip(ds, want):
        prompt = pair["prompt_ids"]
        for side in ("chosen", "rejected"):
            assert row[f"{side}_input_ids"] == prompt + pair[f"{side}_ids"]
            assert row[f"{side}_labels"] == [IGNORE_INDEX] * len(prompt) + pair[f"{side}_ids"]
            assert row[f"{side}_attention_mask"] == [1] * len(row[f"{side}_input_ids"])
    batch = _lf_collate([ds[i] for i in range(3)], pairwise=True)
    assert batch["input_ids"].shape[0] == 6  # chosen then rejected, as its DPO trainer splits them
    for r, pair in enumerate(want):
        real = batch["attention_mask"][r].bool()
        assert batch["labels"][r][real].tolist() == [IGNORE_INDEX] * len(pair["prompt_ids"]) + pair["chosen_ids"]


def test_fractional_loss_weights_are_refused(tmp_path):
    record = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello.", "loss_weight": 0.5},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye."},
        ]
    }
    run_build([write_jsonl(tmp_path / "w.jsonl", [record])], TOK, tmp_path / "w")
    for fmt in ("axolotl", "llamafactory", "mds", "swift", "olmo-core"):
        done = padprep_cli("export", str(tmp_path / "w"), str(tmp_path / fmt), "--to", fmt)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "fractional loss weights" in done.stderr
        assert not (tmp_path / fmt).exists()


@pytest.mark.parametrize("fmt", ["axolotl", "mds", "olmo-core", "megatron-packed"])
def test_pairs_refused_where_the_format_has_none(builds, tmp_path, fmt):
    done = padprep_cli("export", str(builds["pairs"]), str(tmp_path / "x"), "--to", fmt)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "preference" in done.stderr, done.stderr
    assert not (tmp_path / "x").exists()


# --- MosaicML streaming (MDS) for llm-foundry ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def streaming():
    """mosaicml-streaming's ``StreamingDataset`` and llm-foundry's ``stitch_turns_decoder_only`` (its collator's)."""
    if importlib.util.find_spec("torchvision") is None:  # imported by streaming.vision only; text samples never reach it
        for name in ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.transforms.functional"):
            stand_in = types.ModuleType(name)
            stand_in.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules.setdefault(name, stand_in)
        sys.modules["torchvision.datasets"].VisionDataset = type("VisionDataset", (), {})
        sys.modules["torchvision.transforms.functional"].to_tensor = None
    pytest.importorskip("streaming")
    spec = importlib.util.find_spec("llmfoundry")
    if spec is None:
        pytest.skip("llm-foundry is not installed (tests/exports-requirements.txt)")
    # llmfoundry/__init__ imports composer and the model zoo; its collator module needs only torch, transformers and
    # llmfoundry.utils.consts: reach it without running the package's __init__.
    root = Path(list(spec.submodule_search_locations)[0])
    for name, path in (("llmfoundry", root), ("llmfoundry.utils", root / "utils")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    collator_spec = importlib.util.spec_from_file_location("llmfoundry_collator", root / "data" / "finetuning" / "collator.py")
    collator = importlib.util.module_from_spec(collator_spec)
    collator_spec.loader.exec_module(collator)
    from streaming import StreamingDataset

    return StreamingDataset, collator.stitch_turns_decoder_only


def _mds_rows(streaming, path: Path, split: str, eos_id: int) -> list[tuple[list[int], list[int]]]:
    dataset_cls, stitch = streaming
    ds = dataset_cls(local=str(path), split=split, shuffle=False, batch_size=1)
    rows = []
    for i in range(ds.num_samples):
        # what llm-foundry's collator does with each sample, with target_prompts: none, target_responses: all
        rows.append(stitch(ds[i]["turns"], target_prompts="none", target_responses="all", eos_token_id=eos_id, validate=True))
    return rows


def _tail_cut(want):
    """padprep's rows less what follows the last trained token (a format that cannot hold it leaves it out)."""
    out = []
    for ids, labels in want:
        end = trained(labels)[-1] + 1
        out.append((ids[:end], labels[:end]))
    return out


@pytest.mark.parametrize("build", ["rows", "packed"])
def test_mds_read_by_streaming_and_stitched_by_llm_foundry(builds, tmp_path, build, streaming):
    from tokenizers import Tokenizer

    eos_id = Tokenizer.from_file(str(TOK / "tokenizer.json")).token_to_id("<|im_end|>")  # the sample tokenizer's eos
    result = export(builds[build], "mds", tmp_path / "mds")
    want = conversations(builds[build])
    check_rows(_mds_rows(streaming, tmp_path / "mds", "train", eos_id), _tail_cut(want))
    assert result.manifest["written"]["untrained_tail_tokens"] == sum(
        len(i) - len(c[0]) for (i, _), c in zip(want, _tail_cut(want))
    )


def test_mds_recipe_sides_are_split_folders(builds, tmp_path, streaming):
    export(builds["mix"], "mds", tmp_path / "mds")
    for side in ("train", "eval"):
        check_rows(_mds_rows(streaming, tmp_path / "mds", side, None), _tail_cut(conversations(builds["mix"] / side)))


# --- ms-swift ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swift():
    pytest.importorskip("swift")
    from swift.pipelines.utils import get_cached_dataset

    return get_cached_dataset


def _swift_load(get_cached_dataset, dest: Path, val: bool = False):
    """What ``swift sft --cached_dataset DEST/train [--cached_val_dataset DEST/val]`` loads (its own function)."""
    args = types.SimpleNamespace(
        cached_dataset=[str(dest / "train")],
        cached_val_dataset=[str(dest / "val")] if val else [],
        data_seed=42,
        max_length=4096,
        truncation_strategy="delete",
    )
    train, vals = get_cached_dataset(args)
    return train[0], (vals[0] if val else None)


def _swift_template(mode: str):
    """ms-swift's chatml template on the sample tokenizer (its data collator pads the rows it trains on)."""
    import torch
    from swift.model.model_meta import ModelInfo
    from swift.template import get_template
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(TOK))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    # what swift's model loader attaches to the processor; no model is loaded to collate rows
    tokenizer.model_info = ModelInfo("padprep-sample", str(TOK), torch.float32, 4096, None, 0, task_type="causal_lm")
    tokenizer.model_meta = types.SimpleNamespace(is_multimodal=False)
    template = get_template(tokenizer, template_type="chatml")
    template.set_mode(mode)
    return template


@pytest.mark.parametrize("build", ["rows", "packed"])
def test_swift_cached_dataset_reads_every_conversation_exactly(builds, tmp_path, build, swift):
    export(builds[build], "swift", tmp_path / "sw")
    ds, _ = _swift_load(swift, tmp_path / "sw")
    want = conversations(builds[build])
    check_rows(list(zip(ds["input_ids"], ds["labels"])), want)
    assert ds["lengths"] == [[len(i)] for i, _ in want] and ds["length"] == [len(i) for i, _ in want]
    batch = _swift_template("train").data_collator([ds[i] for i in range(4)])
    for r in range(4):
        real = batch["attention_mask"][r].bool()
        assert batch["input_ids"][r][real].tolist() == want[r][0]
        assert batch["labels"][r][real].tolist() == want[r][1]
        assert (batch["labels"][r][~real] == IGNORE_INDEX).all()


def test_swift_recipe_sides_are_train_and_val(builds, tmp_path, swift):
    export(builds["mix"], "swift", tmp_path / "sw")
    train, val = _swift_load(swift, tmp_path / "sw", val=True)
    for ds, side in ((train, "train"), (val, "eval")):
        check_rows(list(zip(ds["input_ids"], ds["labels"])), conversations(builds["mix"] / side))


def test_swift_pairs_are_its_rlhf_columns(builds, tmp_path, swift):
    import pyarrow as pa

    export(builds["pairs"], "swift", tmp_path / "sw")
    ds, _ = _swift_load(swift, tmp_path / "sw")
    manifest = json.loads((builds["pairs"] / "manifest.json").read_text())
    want = []
    for shard in manifest["shards"]:
        with pa.memory_map(str(builds["pairs"] / shard["file"])) as src:
            want += pa.ipc.open_stream(src).read_all().to_pylist()
    assert len(ds) == len(want) == 3
    for row, pair in zip(ds, want):
        prompt = pair["prompt_ids"]
        for side in ("chosen", "rejected"):
            assert row[f"{side}_input_ids"] == prompt + pair[f"{side}_ids"]
            assert row[f"{side}_labels"] == [IGNORE_INDEX] * len(prompt) + pair[f"{side}_ids"]
            assert row[f"{side}_length"] == len(prompt) + len(pair[f"{side}_ids"])
        assert row["lengths"] == [row["chosen_length"], row["rejected_length"]]
    batch = _swift_template("rlhf").data_collator([ds[i] for i in range(3)])
    assert batch["input_ids"].shape[0] == 6  # chosen rows then rejected rows, as its DPO trainer splits them
    for r, pair in enumerate(want):
        for k, side in ((r, "chosen"), (r + 3, "rejected")):
            real = batch["attention_mask"][k].bool()
            assert batch["input_ids"][k][real].tolist() == pair["prompt_ids"] + pair[f"{side}_ids"]
            assert batch["labels"][k][real].tolist() == [IGNORE_INDEX] * len(pair["prompt_ids"]) + pair[f"{side}_ids"]


# --- OLMo-core -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def olmo_core():
    pytest.importorskip("olmo_core")
    from olmo_core.data.numpy_dataset import NumpyPaddedFSLDataset
    from olmo_core.data.utils import get_labels

    return NumpyPaddedFSLDataset, get_labels


def _olmo_instances(olmo_core, folder: Path, work: Path, monkeypatch):
    """Every document of an export through OLMo-core's padded numpy dataset (one instance per document), boundaries
    from the metadata files, with its ``get_labels`` (mask, then shift)."""
    import numpy as np
    import torch

    dataset_cls, get_labels = olmo_core
    monkeypatch.setenv("OLMO_DATA_PREP_USE_ARRAY_IF_LOCAL", "metadata")
    tokens = sorted(str(p) for p in folder.glob("token_ids_part_*.npy"))
    masks = sorted(str(p) for p in folder.glob("labels_mask_part_*.npy"))
    assert tokens and len(tokens) == len(masks)
    ds = dataset_cls(
        *tokens, sequence_length=1024, pad_token_id=0, eos_token_id=2, vocab_size=1 << 16, dtype=np.uint32, label_mask_paths=masks
    )
    ds.work_dir = work
    ds.prepare()
    out = []
    for i in range(len(ds)):
        item = ds[i]
        n = int(item["label_mask"].shape[0])
        batch = {"input_ids": item["input_ids"][None], "label_mask": item["label_mask"][None]}
        shifted = get_labels(batch)[0]
        out.append((item["input_ids"][:n], item["label_mask"], shifted))
        assert n == 1024 and torch.is_tensor(shifted)
    return out


@pytest.mark.parametrize("build", ["rows", "packed"])
def test_olmo_core_numpy_dataset_reads_every_conversation_exactly(builds, tmp_path, build, olmo_core, monkeypatch):
    result = export(builds[build], "olmo-core", tmp_path / "olmo")
    want = conversations(builds[build])
    got = _olmo_instances(olmo_core, tmp_path / "olmo" / "train", tmp_path / "work", monkeypatch)
    assert len(got) == len(want) == result.manifest["written"]["rows"]["train"]
    for (ids, mask, shifted), (want_ids, want_labels) in zip(got, want):
        n = len(want_ids)
        assert ids[:n].tolist() == want_ids
        assert mask[n:].sum() == 0  # padding never trained
        assert [i for i in range(n) if mask[i]] == trained(want_labels)
        # OLMo-core's labels (masked input_ids shifted left) are padprep's labels shifted as any causal trainer does
        assert shifted[: n - 1].tolist() == want_labels[1:]


def test_olmo_core_recipe_sides_are_folders(builds, tmp_path, olmo_core, monkeypatch):
    export(builds["mix"], "olmo-core", tmp_path / "olmo")
    for side in ("train", "eval"):
        want = conversations(builds["mix"] / side)
        got = _olmo_instances(olmo_core, tmp_path / "olmo" / side, tmp_path / f"work-{side}", monkeypatch)
        assert [ids[: len(w)].tolist() for (ids, _, _), (w, _) in zip(got, want)] == [w for w, _ in want]


# --- Megatron-Bridge / NeMo packed SFT ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def megatron_packed():
    """Megatron-Bridge's ``create_sft_dataset`` -> ``GPTSFTPackedDataset`` (0.3.1, the newest on PyPI), whose ``collate_fn`` the Parquet dataset
    of its main branch (``GPTSFTPackedParquetDataset``, not released yet) inherits. Its ``sft`` module is reached
    without running ``megatron.bridge``'s ``__init__`` (which imports the model zoo and transformer-engine)."""
    spec = importlib.util.find_spec("megatron.bridge") if importlib.util.find_spec("megatron") else None
    if spec is None:
        pytest.skip("megatron-bridge is not installed (tests/exports-requirements.txt)")
    root = Path(list(spec.submodule_search_locations)[0])
    for name in ("megatron.bridge", "megatron.bridge.data", "megatron.bridge.data.datasets", "megatron.bridge.training"):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(root.joinpath(*name.split(".")[2:]))]
            sys.modules[name] = package
    if "megatron.bridge.training.tokenizers" not in sys.modules:
        package = types.ModuleType("megatron.bridge.training.tokenizers")
        package.__path__ = [str(root / "training" / "tokenizers")]
        sys.modules["megatron.bridge.training.tokenizers"] = package
    from megatron.bridge.data.datasets.sft import create_sft_dataset

    return create_sft_dataset


def test_megatron_packed_parquet_keeps_the_packing_and_trains_padprep_positions(builds, tmp_path, megatron_packed):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    eos = Tokenizer.from_file(str(TOK / "tokenizer.json")).token_to_id("<|im_end|>")
    export(builds["packed"], "megatron-packed", tmp_path / "mg")
    table = pq.read_table(tmp_path / "mg" / "train.idx.parquet")
    # the published schema of GPTSFTPackedParquetDataset
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.schema.field("loss_mask").type == pa.list_(pa.int8())
    assert table.schema.field("seq_start_id").type == pa.list_(pa.int32())
    metadata = json.loads((tmp_path / "mg" / "pack_metadata.json").read_text())
    manifest = json.loads((builds["packed"] / "manifest.json").read_text())
    rows, packs = table.to_pylist(), []
    for shard in manifest["shards"]:
        cols = read_shard(builds["packed"] / shard["file"])
        offsets = cols["seq_lens_offsets"]
        for r in range(len(cols["input_ids"])):
            real = cols["attention_mask"][r].astype(bool)
            packs.append(
                (
                    cols["input_ids"][r][real].tolist(),
                    cols["labels"][r][real].tolist(),
                    cols["seq_lens"][offsets[r] : offsets[r + 1]].tolist(),
                )
            )
    assert len(rows) == len(packs)
    for row, (ids, labels, seq_lens) in zip(rows, packs):
        assert row["input_ids"] == ids and row["seq_start_id"] == np.concatenate(([0], np.cumsum(seq_lens)[:-1])).tolist()
        assert len(row["loss_mask"]) == len(ids) and row["seq_start_id"][0] == 0  # validate_row's invariants
    assert metadata[0]["max_samples_per_bin"] == max(len(p[2]) for p in packs)
    assert metadata[0]["dataset_max_seqlen"] == max(n for p in packs for n in p[2])
    assert metadata[0]["min_packed_seqlen"] == min(len(p[0]) for p in packs) and metadata[0]["pack_size"] == 512

    # Megatron's own packed dataset and collator on the same rows (its .npy form; the Parquet class reads the same dicts)
    npy = tmp_path / "train.npy"
    np.save(npy, np.array(rows, dtype=object), allow_pickle=True)
    tokenizer = types.SimpleNamespace(eos_id=eos, pad_id=eos, bos_id=None)
    ds = megatron_packed(  # its factory: a .npy path makes a GPTSFTPackedDataset, answer_only_loss as by default
        npy,
        tokenizer,
        seq_length=512,
        pad_to_max_length=True,
        pad_cu_seqlens=True,
        pack_metadata_file_path=tmp_path / "mg" / "pack_metadata.json",
    )
    assert type(ds).__name__ == "GPTSFTPackedDataset"
    assert len(ds) == len(packs)
    for i, (ids, labels, seq_lens) in enumerate(packs):
        batch = ds.collate_fn([ds[i]])
        tokens, targets, mask = batch["tokens"][0].tolist(), batch["labels"][0].tolist(), batch["loss_mask"][0].tolist()
        want_tokens, want_targets, want_mask, start = [], [], [], 0
        for n in seq_lens:  # padprep's labels shifted within each conversation, as any causal trainer shifts them
            seq_ids, seq_labels = ids[start : start + n], labels[start : start + n]
            want_tokens += seq_ids[:-1]
            want_targets += seq_ids[1:]
            want_mask += [int(t != IGNORE_INDEX) for t in seq_labels[1:]]
            assert all(t == s for t, s in zip(seq_labels[1:], seq_ids[1:]) if t != IGNORE_INDEX)
            start += n
        k = len(want_tokens)
        assert tokens[:k] == want_tokens and targets[:k] == want_targets
        assert mask[:k] == want_mask and not any(mask[k:])
        assert sum(want_mask) == sum(t != IGNORE_INDEX for t in labels)  # every trained token of padprep's, none lost
        cu = batch["cu_seqlens"][0].tolist()
        assert cu[: len(seq_lens) + 1] == np.concatenate(([0], np.cumsum(np.array(seq_lens) - 1))).tolist()


def test_megatron_packed_refuses_an_unpacked_build(builds, tmp_path):
    done = padprep_cli("export", str(builds["rows"]), str(tmp_path / "mg"), "--to", "megatron-packed")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--pack" in done.stderr
    assert not (tmp_path / "mg").exists()
