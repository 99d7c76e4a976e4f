"""Whole builds under --truncation and --train-on."""

from __future__ import annotations

import json

import pytest

from padprep.config import TrainOn, Truncation
from tests.conftest import SAMPLE, run_build, unpadded_rows, write_jsonl


def _long_record():
    return {"messages": [{"role": "user", "content": "tell me a story"}, {"role": "assistant", "content": "fine " * 80}]}


@pytest.mark.parametrize("policy", [Truncation.right, Truncation.left, Truncation.drop])
def test_truncation_policies(tmp_path, policy):
    src = write_jsonl(tmp_path / "in.jsonl", [_long_record()])
    full = run_build([src], SAMPLE / "tokenizer", tmp_path / "full")
    n = full["totals"]["real_tokens"]
    m = run_build([src], SAMPLE / "tokenizer", tmp_path / "cut", max_length=60, truncation=policy, allow_empty=True)
    if policy is Truncation.drop:
        assert (m["totals"]["rows_written"], m["totals"]["dropped"]) == (0, 1)
        return
    ((full_ids, full_labels),) = unpadded_rows(tmp_path / "full")
    ((ids, labels),) = unpadded_rows(tmp_path / "cut")
    assert len(ids) == 60 < n and m["totals"]["truncated"] == 1
    keep = slice(0, 60) if policy is Truncation.right else slice(n - 60, n)
    assert ids.tolist() == full_ids[keep].tolist() and labels.tolist() == full_labels[keep].tolist()


def test_right_truncation_that_loses_the_answer_is_dropped(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [_long_record()])
    m = run_build([src], SAMPLE / "tokenizer", tmp_path / "o", max_length=8, truncation=Truncation.right, allow_empty=True)
    assert (m["totals"]["rows_written"], m["totals"]["dropped"]) == (0, 1)
    reject = json.loads((tmp_path / "o" / "rejects.jsonl").read_text())
    assert reject["reason"] == "no trained token left after truncation"
    assert json.loads(reject["record"]) == _long_record()


def test_train_on_all_trains_every_token(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [_long_record()])
    run_build([src], SAMPLE / "tokenizer", tmp_path / "o", train_on=TrainOn.all)
    ((ids, labels),) = unpadded_rows(tmp_path / "o")
    assert labels.tolist() == ids.tolist()
