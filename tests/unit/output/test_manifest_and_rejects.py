"""The engine-neutral stages: reason codes, the typed manifest and its format check, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from padprep.chat.templates import TemplateError
from padprep.chat.tokenizer import TokenizerError
from padprep.errors import EXIT_FAILED, EXIT_USAGE, PadprepError
from padprep.input.read import InputError
from padprep.output.manifest import FORMAT, Manifest, ManifestError, read_manifest
from padprep.output.ownership import OutputExists
from padprep.output.rejects import describe_reason
from tests.conftest import SAMPLE, padprep_cli, run_build, write_jsonl

TOK = SAMPLE / "tokenizer"


def test_every_reject_has_a_stable_code_in_rejects_and_manifest(tmp_path):
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [good] * 3)
    with open(src, "ab") as fh:
        fh.write(
            b'{"messages": [\n[1]\n\xff\xfe\n{"messages": [{"role": "user", "content": "x"}]}\n'
            b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}\n'
        )
    manifest = run_build([src], TOK, tmp_path / "o", max_reject_rate=1.0)
    rejects = [json.loads(line) for line in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert [r["code"] for r in rejects] == ["invalid_json", "wrong_type", "not_utf8", "nothing_to_train", "empty_reply"]
    reasons = manifest["totals"]["reasons"]
    assert reasons == {"empty_reply": 1, "invalid_json": 1, "not_utf8": 1, "nothing_to_train": 1, "wrong_type": 1}
    assert manifest["totals"]["reason_descriptions"]["invalid_json"] == "invalid JSON"


def test_reason_description_drops_the_per_record_detail():
    assert describe_reason("invalid JSON at byte 16: Expecting value") == "invalid JSON"
    assert describe_reason("longer than --max-length (900 > 512 tokens) with --truncation drop") == "longer than --max-length"


def test_manifest_round_trips_and_keeps_its_shape(tmp_path):
    out = tmp_path / "o"
    written = run_build([SAMPLE / "chat.jsonl"], TOK, out)
    manifest = read_manifest(out)
    assert manifest.to_json() == written == json.loads((out / "manifest.json").read_text())
    assert manifest.format == FORMAT and manifest.engine == "local" and not manifest.packed
    assert manifest.rows_written == written["totals"]["rows_written"] == sum(s.rows for s in manifest.shards)


def test_manifest_of_another_format_is_refused_in_one_line(tmp_path):
    out = tmp_path / "o"
    run_build([SAMPLE / "chat.jsonl"], TOK, out)
    obj = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**obj, "format": "padprep-shards/9"}))
    with pytest.raises(ManifestError, match=r"format 'padprep-shards/9', this padprep reads padprep-shards/1") as err:
        read_manifest(out)
    assert err.value.exit_code == EXIT_FAILED and "\n" not in str(err.value)
    res = padprep_cli("inspect", str(out))
    assert res.returncode == EXIT_FAILED and res.stderr.count("\n") == 1 and "padprep-shards/9" in res.stderr
    with pytest.raises(ManifestError):
        Manifest.from_json([])


@pytest.mark.parametrize("error", [InputError, TokenizerError, TemplateError, OutputExists])
def test_usage_errors_carry_exit_2(error):
    exc = error("x")
    assert isinstance(exc, PadprepError) and exc.exit_code == EXIT_USAGE


def test_engine_is_recorded_but_not_in_the_build_key(tmp_path):
    from padprep.config import BuildConfig, EngineName
    from padprep.output.buildkey import build_key

    base = BuildConfig(inputs=(SAMPLE / "chat.jsonl",), tokenizer=str(TOK), output=tmp_path / "o")
    on_ray = BuildConfig(
        inputs=base.inputs, tokenizer=base.tokenizer, output=base.output, engine=EngineName.ray, ray_address="ray://head:10001"
    )
    assert build_key(base, ["d"]) == build_key(on_ray, ["d"])
    assert on_ray.as_manifest()["engine"] == "ray" and "ray_address" not in on_ray.as_manifest()


def test_every_reject_code_raised_is_in_the_one_table():
    """Each raise site names its code (never derived from the message's words), and each code is described."""
    import re

    from padprep.schema import REJECT_CODES

    root = Path(__file__).resolve().parents[3] / "padprep"
    named = set()
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        named |= set(re.findall(r'\b(?:error_)?code\s*=\s*"([a-z_]+)"', text))
        assert "_code_of" not in text
        # a RecordError without its code would not construct (code is keyword-only and required)
    assert named, "no raise site found"
    assert named <= set(REJECT_CODES), named - set(REJECT_CODES)
    assert all(REJECT_CODES.values())
