"""How pass 1 uses the cores: the plan, and output that is byte-identical whatever it is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from padprep.config import SpanMethod
from padprep.run.parallel import SMALL_INPUT_BYTES, plan_workers
from tests.conftest import ROOT, SAMPLE, padprep_cli, run_build, shard_bytes, tree_bytes, write_jsonl
from tests.support.data import mixed_input

TOK = SAMPLE / "tokenizer"
CHAT = SAMPLE / "chat.jsonl"


def shape(*args, **kwargs) -> tuple[int, int]:
    plan = plan_workers(*args, **kwargs)
    return plan.processes, plan.tokenizer_threads


def test_plan_uses_every_core_without_oversubscribing_tokenizer_threads():
    big = SMALL_INPUT_BYTES * 10
    assert shape(0, big, cores=2) == (2, 1)  # one worker per core, one tokenizer thread each
    assert shape(0, big, cores=8) == (8, 1)
    assert shape(2, big, cores=8) == (2, 4)  # fewer workers: the tokenizer's threads fill the cores
    assert shape(3, big, cores=8) == (3, 2)
    assert shape(4, big, cores=2) == (4, 1)  # asked for more than the cores: never zero threads
    assert shape(1, big, cores=8) == (1, 8)  # one process: the tokenizer's threads on every core
    assert shape(0, 1000, cores=8) == (1, 8)  # small input: workers would cost more than they save
    assert shape(0, None, cores=8) == (8, 1)  # standard input: size unknown, assume large
    assert shape(0, big, cores=1) == (1, 1)


@pytest.mark.parametrize("seed", [None, 3])
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_output_is_byte_identical_whatever_the_workers(tmp_path, seed):
    src = mixed_input(tmp_path)
    trees = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        manifest = run_build([src], TOK, out, workers=workers, chunk_size=5, max_length=256, seed=seed, max_reject_rate=0.5)
        assert manifest["totals"]["rejected"] > 0 and manifest["totals"]["dropped"] > 0
        trees[workers] = tree_bytes(out)
    assert trees[1] == trees[2] == trees[3]


@pytest.mark.slow
def test_cli_workers_option_and_its_report(tmp_path):
    out = tmp_path / "o"
    res = padprep_cli("build", str(CHAT), "--tokenizer", str(TOK), "--output", str(out), "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "2 worker processes" in res.stderr
    auto = padprep_cli("build", str(CHAT), "--tokenizer", str(TOK), "--output", str(tmp_path / "auto"))
    assert auto.returncode == 0 and "1 process" in auto.stderr and "under 4 MiB" in auto.stderr
    assert tree_bytes(out) == tree_bytes(tmp_path / "auto")
    bad = padprep_cli("build", str(CHAT), "--tokenizer", str(TOK), "--output", str(tmp_path / "x"), "--workers", "-1")
    assert bad.returncode == 2 and "--workers" in bad.stderr


def test_progress_rates_share_and_eta():
    from padprep.run.progress import Throughput, format_duration

    now = [100.0]
    position = [0]
    progress = Throughput(clock=lambda: now[0])
    progress.start(total_bytes=1000)
    progress.reading(0, lambda: position[0])
    now[0], position[0] = 110.0, 250
    progress.advance(records=500, tokens=20_000)
    snap = progress.snapshot()
    assert (snap.records_per_second, snap.tokens_per_second) == (50.0, 2000.0)
    assert snap.fraction == 0.25 and snap.eta_seconds == 30.0  # a quarter in 10 s: 30 s to go
    progress.reading(600, lambda: position[0])  # the second file starts 600 bytes into the inputs
    position[0] = 300
    assert progress.snapshot().fraction == 0.9
    assert "90% of input" in progress.snapshot().line() and "ETA 0:01" in progress.snapshot().line()
    assert format_duration(3725) == "1:02:05" and format_duration(None) == "?"
    unknown = Throughput(clock=lambda: now[0])
    unknown.start(None)  # standard input: rates, no ETA
    assert unknown.snapshot().eta_seconds is None and "ETA" not in unknown.snapshot().line()


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_workers_after_the_tokenizer_pool_started_do_not_hang(tmp_path):
    """A second build in one process, with TOKENIZERS_PARALLELISM set: forking now would give workers
    the tokenizer pool's bookkeeping without its threads (a hang); padprep spawns them instead."""
    script = tmp_path / "twice.py"
    script.write_text(f"""
import os, sys
os.environ["TOKENIZERS_PARALLELISM"] = "true"
from pathlib import Path
from tokenizers import Tokenizer
from padprep.config import BuildConfig
from padprep.run.parallel import start_method
from padprep.run.pipeline import build
if __name__ == "__main__":  # spawned workers import this module again
    tok = Tokenizer.from_file({str(TOK / "tokenizer.json")!r})
    tok.encode_batch(["hello there, general kenobi"] * 64)  # the tokenizer's thread pool now runs
    assert start_method() == "spawn", start_method()
    cfg = BuildConfig(inputs=(Path({str(CHAT)!r}),), tokenizer={str(TOK)!r}, output=Path(sys.argv[1]), workers=2, chunk_size=4)
    print(build(cfg).manifest.rows_written)
""")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "o")], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "48"
    run_build([CHAT], TOK, tmp_path / "w1", workers=1, chunk_size=4)
    assert tree_bytes(tmp_path / "o") == tree_bytes(tmp_path / "w1")


_FORKED_WORKERS = """
import os, sys
from pathlib import Path
import padprep.chat.process as process
from padprep import BuildConfig, build

out, src, tok = map(Path, sys.argv[1:4])
real = process.Processor.process
def process_and_say(self, records):  # exists only in this process's memory: a spawned worker re-imports the module
    with open(out.parent / "pids", "a") as fh:
        fh.write(f"{os.getpid()} {os.getppid()}\\n")
    return real(self, records)
process.Processor.process = process_and_say
build(BuildConfig(inputs=(src,), tokenizer=str(tok), output=out, workers=2, chunk_size=8, max_reject_rate=0.5))
print(os.getpid())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_a_fresh_process_forks_its_workers(tmp_path):
    """Workers run code patched into the parent's memory after import (only a forked child has it), in other processes."""
    src = tmp_path / "in.jsonl"
    src.write_text(CHAT.read_text(encoding="utf-8") * 4, encoding="utf-8")  # 192 records: 128 beyond the preflight sample
    done = subprocess.run(
        [sys.executable, "-c", _FORKED_WORKERS, str(tmp_path / "out"), str(src), str(TOK)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    parent = int(done.stdout.split()[-1])
    calls = [tuple(map(int, line.split())) for line in (tmp_path / "pids").read_text().splitlines()]
    workers = {pid for pid, ppid in calls if pid != parent and ppid == parent}
    assert len(workers) == 2, calls  # both workers ran chunks, forked from the build's process
    assert sum(1 for pid, _ in calls if pid in workers) == 16  # the 128 records after the sample, in chunks of 8


# -- the pad process and the head start -------------------------------------------------------------


@pytest.mark.parametrize("options", [["--seed", "7"], ["--pack", "--max-length", "512"]])
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_pass_two_in_the_pad_process_writes_the_bytes_this_process_would(tmp_path, options):
    import torch  # noqa: F401  (torch imported: the in-process build below pads here, not in a pad process)

    src = mixed_input(tmp_path)
    cli = padprep_cli(
        "build", str(src), "--tokenizer", str(TOK), "--output", str(tmp_path / "cli"), "--max-reject-rate", "0.5", *options
    )
    assert cli.returncode == 0, cli.stderr
    assert "pass 2 (pad and write) in the pad process" in cli.stderr  # a fresh CLI forks one
    kwargs = {"seed": 7} if "--seed" in options else {"pack": True, "max_length": 512}
    run_build([src], TOK, tmp_path / "here", max_reject_rate=0.5, **kwargs)
    assert shard_bytes(tmp_path / "cli") and shard_bytes(tmp_path / "cli") == shard_bytes(tmp_path / "here")


@pytest.mark.slow
def test_the_command_starts_a_builds_pad_process_before_the_cli_loads(tmp_path):
    """``padprep build`` (here ``python -m padprep build``) forks its pad process from the entry point; an
    up-to-date build and a usage error stop it at once (the pipes close: nothing outlives the command)."""
    args = ["build", str(CHAT), "--tokenizer", str(TOK), "--output", str(tmp_path / "o")]
    first = padprep_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "pass 2 (pad and write) in the pad process, started at launch" in first.stderr
    again = padprep_cli(*args)
    assert again.returncode == 0 and "is up to date" in again.stdout
    usage = padprep_cli("build", "--tokenizer", str(TOK))  # no input, no output
    assert usage.returncode == 2 and "Missing" in usage.stderr
    other = padprep_cli(*args[:-1], str(tmp_path / "other"), "--engine", "nonesuch")  # --engine: no early fork
    assert other.returncode == 2 and "nonesuch" in other.stderr


_HELPED_CLI = """
import sys
import padprep.forking, padprep.layout.pass_two
padprep.layout.pass_two._HELPER_SPILL_BYTES = 0  # a helper whatever the spill's size
real = padprep.forking.fork_call
def fork_call(fn, *args):
    print(f"helper: {fn.__name__}", file=sys.stderr, flush=True)
    return real(fn, *args)
padprep.forking.fork_call = fork_call
from padprep.cli import app
sys.argv[0] = "padprep"
app()
"""


@pytest.mark.parametrize(
    "options", [["--seed", "7"], [], ["--pack", "--max-length", "512"], ["--pack", "--max-length", "512", "--seed", "7"]]
)
@pytest.mark.slow
def test_pass_two_shared_with_a_forked_helper_writes_the_same_bytes(tmp_path, options):
    """In the pad process, a helper routes the second half of the spill and pads and writes half of the
    buckets (or packed shards); shard names (numbered across buckets), shuffles and bytes are those of one
    process."""
    import torch  # noqa: F401  (the in-process build below pads here, alone)

    src = mixed_input(tmp_path)
    src.write_text(src.read_text(encoding="utf-8") * 40, encoding="utf-8")  # spilled in several batches: two halves
    common = ["--tokenizer", str(TOK), "--max-reject-rate", "0.5", "--shard-tokens", "3000", *options]
    cli = subprocess.run(
        [sys.executable, "-c", _HELPED_CLI, "build", str(src), "--output", str(tmp_path / "cli"), *common],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    packed = "--pack" in options
    helped = ("_scatter_part", "_write_packed") if packed else ("route_rows", "_write_buckets")
    assert all(f"helper: {name}" in cli.stderr for name in helped), cli.stderr
    kwargs = {"seed": 7} if "--seed" in options else {}
    if packed:
        kwargs.update(pack=True, max_length=512)
    m = run_build([src], TOK, tmp_path / "here", max_reject_rate=0.5, shard_tokens=3000, **kwargs)
    if packed:
        assert len(m["shards"]) > 2
    else:
        assert len(m["shards"]) > len({s["bucket"] for s in m["shards"]}) > 2  # several buckets, some of several shards
    serials = [int(s["file"].rsplit("-", 1)[1].split(".")[0]) for s in sorted(m["shards"], key=lambda s: s["file"])]
    assert serials == list(range(len(serials)))  # numbered across buckets, in bucket order
    assert shard_bytes(tmp_path / "cli") == shard_bytes(tmp_path / "here")
    assert json.loads((tmp_path / "cli" / "manifest.json").read_text())["shards"] == m["shards"]


def _fails_with_oserror(path: str) -> None:
    raise PermissionError(13, "Permission denied", path)


def _killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would


def test_pad_process_returns_results_and_raises_failures_here():
    from padprep.errors import BuildFailed
    from padprep.run.padproc import PadProcess

    with PadProcess() as pad:
        assert pad.describe().startswith("in the pad process")
        assert pad.run(divmod, 7, 2) == (3, 1)
    with PadProcess() as pad, pytest.raises(PermissionError) as caught:
        pad.run(_fails_with_oserror, "/out/bucket-000001-00000.arrow")
    assert caught.value.filename == "/out/bucket-000001-00000.arrow" and caught.value.errno == 13
    with PadProcess() as pad, pytest.raises(BuildFailed, match="exit status -9"):  # one line, not a traceback
        pad.run(_killed)
    with PadProcess() as pad:
        unused = pad._proc
    assert unused.exitcode == -signal.SIGKILL  # never given pass 2 (an up-to-date build): stopped, not waited for
    with PadProcess(enabled=False) as pad:  # no fork: the same call, here
        assert pad.describe() == "in this process" and pad.run(divmod, 7, 2) == (3, 1)


def test_a_helper_of_pass_two_returns_results_and_raises_failures_here():
    from padprep.errors import BuildFailed
    from padprep.forking import fork_call

    assert fork_call(divmod, 7, 2)() == (3, 1)
    with pytest.raises(PermissionError) as caught:
        fork_call(_fails_with_oserror, "/out/bucket-000001-00000.arrow")()
    assert caught.value.filename == "/out/bucket-000001-00000.arrow"
    with pytest.raises(BuildFailed, match="ended without a result"):  # killed: one line, not a hang
        fork_call(_killed)()


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_chunks_started_before_preflight_are_redone_when_preflight_changes_the_spans(tmp_path, monkeypatch):
    """Workers start on the chunks after the preflight sample with the header-scan spans; when preflight
    then finds those spans differ from the template's, every chunk is made again with the template's."""
    from padprep.chat.render import Renderer

    real = Renderer.header_spans

    def half_spans(self, conv, full):  # a header scan that disagrees with the template (forked workers inherit it)
        spans = real(self, conv, full)
        return None if spans is None else [(start, (start + end) // 2) for start, end in spans]

    monkeypatch.setattr(Renderer, "header_spans", half_spans)
    shards = {}
    for name, options in [
        ("w1", {"workers": 1}),
        ("w2", {"workers": 2}),
        ("w3", {"workers": 3}),
        ("template", {"workers": 2, "span_method": SpanMethod.template}),
    ]:
        m = run_build([CHAT], TOK, tmp_path / name, chunk_size=3, preflight_records=4, **options)
        assert any(h["code"] == "fast_spans_disagree" for h in m["hazards"]) == (name != "template")
        assert m["totals"]["rows_written"] == 48
        shards[name] = shard_bytes(tmp_path / name)
    assert shards["w1"] == shards["w2"] == shards["w3"] == shards["template"]
    monkeypatch.setattr(Renderer, "header_spans", real)
    run_build([CHAT], TOK, tmp_path / "fast", chunk_size=3, preflight_records=4, workers=2)
    assert shard_bytes(tmp_path / "fast") == shards["template"]  # the true header scan agrees with the template


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_progress_over_several_inputs_only_climbs_and_ends_at_the_whole(tmp_path, suffix):
    """The share read is the files before plus the position in this one; a file read to its end and closed
    counts whole (it counted as 0: 99%, then 50% after the last file closed)."""
    from padprep.config import BuildConfig
    from padprep.run.pipeline import build
    from padprep.run.progress import Throughput

    records = [json.loads(line) for line in CHAT.read_text().splitlines()] * 20
    for name in ("a", "b"):
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".json":
            path.write_text(json.dumps(records))
        else:
            write_jsonl(path, records)

    class Recorded(Throughput):
        fractions: list = []

        def advance(self, records: int, tokens: int) -> None:
            super().advance(records, tokens)
            self.fractions.append(self.snapshot().fraction)

    progress = Recorded()
    inputs = (tmp_path / f"a{suffix}", tmp_path / f"b{suffix}")
    build(BuildConfig(inputs=inputs, tokenizer=str(TOK), output=tmp_path / "out", workers=1, chunk_size=16), progress)
    seen = progress.fractions
    assert len(seen) > 4 and seen == sorted(seen) and seen[-1] == 1.0, seen
    assert progress.snapshot().fraction == 1.0  # asked again after the build: every file closed
