"""amplint.runtime under torch.distributed: DDP and FSDP under torchrun, one merged report.

The end-to-end tests launch ``torchrun --nproc-per-node 2 --no-python amplint run ...`` on
small scripts (gloo backend, CPU, tiny models, a few steps); each launch takes seconds
(mostly three ``import torch``), so there are few of them. The merging itself is tested
in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import amplint.runtime as ar
import pytest
import torch
from amplint.runtime import rank_reports, ranks, reporting
from amplint.runtime.runner import run_script

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is needed",
)

AMPLINT = shutil.which("amplint", path=os.path.dirname(sys.executable)) or shutil.which("amplint")

# The DDP loops: rank-dependent data, so DDP's gradient averaging matters.
DDP_PRELUDE = """\
import contextlib
import gc
import sys
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = DDP(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
data = torch.Generator().manual_seed(rank)


def teardown():
    # The process group goes while the interpreter is whole: DDP keeps it past
    # destroy_process_group(), and when it went only at shutdown a rank sometimes died of
    # SIGABRT ("terminate called without an active exception"), under plain python too.
    global model, opt
    del model, opt
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
"""

DDP_CLIPS_SCALED = DDP_PRELUDE + textwrap.dedent(
    """\
    for step in range(3):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(torch.randn(4, 8, generator=data)).float().pow(2).mean()
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # AMP006
        scaler.step(opt)
        scaler.update()
    import amplint.runtime as ar  # what the script itself sees, with the process group up

    found = [(f.code, f.rank) for f in ar.report()]
    sys.stdout.write(f"rank {rank} report(): {found}\\n")  # one write: ranks share the pipe
    teardown()
    """
)

# Accumulation over two micro-batches with no_sync(), unscale_ before clipping: correct.
DDP_CORRECT = DDP_PRELUDE + textwrap.dedent(
    """\
    for step in range(3):
        opt.zero_grad()
        for micro in range(2):
            with model.no_sync() if micro == 0 else contextlib.nullcontext():
                with torch.autocast("cpu", dtype=torch.float16):
                    out = model(torch.randn(4, 8, generator=data))
                    loss = out.float().pow(2).mean() / 2
                scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
    params = [p.detach().clone() for p in model.parameters()]
    torch.save(params, f"{sys.argv[1]}.rank{rank}.pt")
    teardown()
    """
)

DDP_RANK_FAILS = DDP_PRELUDE + textwrap.dedent(
    """\
    for step in range(4):
        if rank == int(sys.argv[1]) and step == 2:
            raise RuntimeError(f"rank {rank} fails at step 2")
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(torch.randn(4, 8, generator=data)).float().pow(2).mean()
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # AMP006
        scaler.step(opt)
        scaler.update()
    teardown()
    """
)

# FSDP (FullyShardedDataParallel, then fully_shard) with ShardedGradScaler; rank 1's loss
# is inf at step 1 of each loop. Only rank 1 has the non-finite loss (AMP101), but both
# ranks skip that step: ShardedGradScaler all-reduces found_inf, and the health checks
# read the reduced value.
FSDP = textwrap.dedent(
    """\
    import gc

    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    dist.init_process_group("gloo")
    rank = dist.get_rank()

    def train(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = ShardedGradScaler("cpu")
        assert type(scaler).__module__ == "amplint.runtime.distributed", type(scaler)
        data = torch.Generator().manual_seed(rank)
        for step in range(3):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = model(torch.randn(4, 8, generator=data)).float().pow(2).mean()
            if rank == 1 and step == 1:
                loss = loss * float("inf")
            scaler.scale(loss).backward()  # AMP101 on rank 1
            scaler.step(opt)
            scaler.update()
        return scaler.get_scale()

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    assert train(FullyShardedDataParallel(net, device_id=torch.device("cpu"))) == 2.0**15
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    fully_shard(net)
    assert train(net) == 2.0**15
    del net  # the process group goes before shutdown (see the DDP scripts' teardown)
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _torchrun(
    cwd: Path, *command: str, amplint_report: Path | None = None
) -> subprocess.Popen[str]:
    """Start ``torchrun --nproc-per-node 2``: ``amplint run --report`` when a report path is
    given, else plain ``python``."""
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
    ]
    if amplint_report is not None:
        assert AMPLINT is not None, "the amplint console script is not installed"
        launcher += ["--no-python", AMPLINT, "run", "--report", str(amplint_report)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.Popen(
        [*launcher, *command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"torchrun timed out:\n{output}")
    return process.returncode, output


def _line(script: str, marker: str) -> int:
    return next(n for n, text in enumerate(script.splitlines(), 1) if marker in text)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _codes(document: dict[str, Any]) -> list[tuple[str, int, list[int], int]]:
    return [(f["code"], f["line"], f["ranks"], f["count"]) for f in document["findings"]]


# torchrun end to end ----------------------------------------------------------------------


def test_ddp_clipping_scaled_gradients_reported_by_both_ranks_merged_once(
    tmp_path: Path,
) -> None:
    script = tmp_path / "train.py"
    script.write_text(DDP_CLIPS_SCALED)
    report = tmp_path / "r.json"
    status, output = _finish(_torchrun(tmp_path, "train.py", amplint_report=report))
    assert status == 0, output
    merged = _read(report)
    line = _line(DDP_CLIPS_SCALED, "# AMP006")
    assert _codes(merged) == [("AMP006", line, [0, 1], 6)]
    assert merged["findings"][0]["filename"] == str(script)
    assert merged["world_size"] == 2 and merged["ranks"] == [0, 1]
    assert merged["missing_ranks"] == [] and merged["exit_status"] == 0
    assert merged["summary"]["steps"] == 3 and merged["summary"]["skipped_steps"] == 0
    for rank in (0, 1):
        own = _read(tmp_path / f"r.rank{rank}.json")
        assert own["rank"] == rank and own["world_size"] == 2
        assert [(f["code"], f["line"], f["rank"], f["count"]) for f in own["findings"]] == [
            ("AMP006", line, rank, 3)
        ]
        # report() in the script: the findings carry the rank, as the files do.
        assert f"rank {rank} report(): [('AMP006', {rank})]" in output
    # Rank 0 prints the merged table (with the ranks of each finding) and health summary;
    # rank 1 only points at its own file.
    assert output.count("AMP finding(s)") == 2, output
    assert "amplint: 1 AMP finding(s), merged from rank(s) 0, 1" in output
    assert f"{script}:{line}  AMP006  6      0           0,1" in output
    assert output.count("amplint: numerical health over 3 step(s)") == 1, output
    pointer = f"amplint: rank 1: 1 AMP finding(s), report in {tmp_path / 'r.rank1.json'}"
    assert pointer in output


def test_correct_ddp_loop_no_finding_and_same_parameters_as_without_amplint(
    tmp_path: Path,
) -> None:
    (tmp_path / "train.py").write_text(DDP_CORRECT)
    report = tmp_path / "r.json"
    # Both launches at once: each spends most of its time importing torch.
    checked = _torchrun(tmp_path, "train.py", "checked", amplint_report=report)
    plain = _torchrun(tmp_path, "train.py", "plain")
    (checked_status, checked_output), (plain_status, plain_output) = map(_finish, (checked, plain))
    assert plain_status == 0, plain_output
    assert checked_status == 0, checked_output
    merged = _read(report)
    assert merged["findings"] == [] and merged["missing_ranks"] == []
    assert merged["summary"]["steps"] == 3
    runs = {
        (name, rank): torch.load(tmp_path / f"{name}.rank{rank}.pt")
        for name in ("checked", "plain")
        for rank in (0, 1)
    }
    reference = runs["plain", 0]
    for params in runs.values():
        assert len(params) == len(reference)
        assert all(torch.equal(p, q) for p, q in zip(params, reference, strict=True))


def test_fsdp_with_sharded_grad_scaler(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(FSDP)
    report = tmp_path / "r.json"
    status, output = _finish(_torchrun(tmp_path, "train.py", amplint_report=report))
    assert status == 0, output
    merged = _read(report)
    # One finding per loop on rank 1, at the same line: merged into one, count 2.
    assert _codes(merged) == [("AMP101", _line(FSDP, "# AMP101"), [1], 2)]
    assert merged["findings"][0]["first_step"] == 1
    per_rank = merged["summary"]["per_rank"]
    assert {rank: summary["skipped_steps"] for rank, summary in per_rank.items()} == {
        "0": 1,
        "1": 1,
    }
    assert {rank: summary["nonfinite_loss_steps"] for rank, summary in per_rank.items()} == {
        "0": 0,
        "1": 1,
    }
    assert merged["summary"]["scale"]["final"] == 2.0**15


@pytest.mark.parametrize("failing", [1, 0])
def test_a_rank_that_raises_still_gives_the_merged_report(tmp_path: Path, failing: int) -> None:
    """Rank ``failing`` raises at step 2 while the other one waits in DDP's all-reduce.

    When rank 0 fails, rank 1 ends only after rank 0 has (gloo sees the connection close,
    or torchrun stops it): rank 0 merges what is there and rank 1 adds its report."""
    (tmp_path / "train.py").write_text(DDP_RANK_FAILS)
    report = tmp_path / "r.json"
    other = 1 - failing
    stale = tmp_path / f"r.rank{failing}.json"
    stale.write_text(f'{{"rank": {failing}, "findings": [], "exit_status": 0}}')  # earlier
    started = time.monotonic()
    status, output = _finish(_torchrun(tmp_path, "train.py", str(failing), amplint_report=report))
    assert status != 0
    assert f"rank {failing} fails at step 2" in output
    merged = _read(report)
    assert merged["missing_ranks"] == [], output
    assert merged["exit_statuses"][str(failing)] == 1
    assert merged["exit_statuses"][str(other)] != 0  # peer gone: gloo raises, or SIGTERM
    assert merged["exit_status"] != 0
    (code, line, ranks, _) = _codes(merged)[0]
    assert (code, line, ranks) == ("AMP006", _line(DDP_RANK_FAILS, "# AMP006"), [0, 1])
    assert _read(stale)["exit_status"] == 1  # the failing rank wrote its own on its way out
    assert time.monotonic() - started < 60  # nobody waited for the full merge timeout


# Merging, in-process ------------------------------------------------------------------------


def _finding(code: str, line: int, count: int, first_step: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": f"{code} message",
        "filename": "/t/train.py",
        "line": line,
        "count": count,
        "first_step": first_step,
    }


def test_rank_report_path() -> None:
    assert rank_reports.rank_report_path("out/r.json", 3) == "out/r.rank3.json"
    assert rank_reports.rank_report_path("report", 1) == "report.rank1"


def test_merge_dedupes_by_code_file_line_with_ranks_and_summed_counts() -> None:
    rank0 = {
        "rank": 0,
        "findings": [_finding("AMP006", 20, 3, 0)],
        "exit_status": 0,
        "mode": "warn",
        "summary": None,
        "internal_errors": [],
    }
    rank2 = {
        "rank": 2,
        "findings": [_finding("AMP101", 9, 1, 4), _finding("AMP006", 20, 2, 1)],
        "exit_status": 1,
        "mode": "warn",
        "summary": None,
        "internal_errors": ["x: ValueError: y"],
    }
    merged = rank_reports.merge_reports([rank0, rank2], world_size=3)
    assert next(iter(merged)) == "findings"  # first, as in a one-process report
    assert [(f["code"], f["ranks"], f["count"], f["first_step"]) for f in merged["findings"]] == [
        ("AMP006", [0, 2], 5, 0),
        ("AMP101", [2], 1, 4),
    ]
    assert "rank" not in merged and "rank" not in merged["findings"][0]
    assert merged["missing_ranks"] == [1] and merged["ranks"] == [0, 2]
    assert merged["exit_status"] == 1 and merged["exit_statuses"] == {"0": 0, "2": 1}
    assert merged["internal_errors"] == ["x: ValueError: y"]
    assert merged["summary"] is None


def test_merge_summaries() -> None:
    def summary(skipped: int, low: float, final: float, overflow_step: int | None) -> Any:
        return {
            "steps": 10,
            "skipped_steps": skipped,
            "scale": {"min": low, "max": 65536.0, "final": final},
            "first_overflow": None
            if overflow_step is None
            else {"module": "fc", "step": overflow_step, "value": "inf"},
            "grad_underflow_share": 0.5 if skipped else 0.25,
            "grad_zero_share": 0.0,
            "nonfinite_loss_steps": skipped,
            "scheduler_steps_after_skip": 0,
            "closest_to_overflow": [{"module": "fc", "max_abs": "inf" if skipped else 3.0}],
            "config": {"every": 16},
        }

    merged = rank_reports.merge_summaries(
        [(0, summary(0, 1024.0, 2048.0, None)), (1, summary(2, 512.0, 2048.0, 4)), (2, None)]
    )
    assert merged is not None
    assert merged["skipped_steps"] == 2 and merged["nonfinite_loss_steps"] == 2
    assert merged["scale"] == {"min": 512.0, "max": 65536.0, "final": 2048.0}
    assert merged["first_overflow"] == {"module": "fc", "step": 4, "value": "inf", "rank": 1}
    assert merged["grad_underflow_share"] == pytest.approx(0.375)
    assert merged["closest_to_overflow"][0] == {"module": "fc", "max_abs": "inf", "rank": 1}
    assert set(merged["per_rank"]) == {"0", "1"}
    assert merged["config"] == {"every": 16}
    assert rank_reports.merge_summaries([(0, None)]) is None


def _rank_env(monkeypatch: pytest.MonkeyPatch, rank: int, port: str = "29500") -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("MASTER_PORT", port)


def _document(status: int = 0) -> dict[str, Any]:
    return {"findings": [_finding("AMP006", 20, 1, 0)], "exit_status": status, "summary": None}


def test_write_report_per_rank_files_bounded_wait_and_late_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = str(tmp_path / "r.json")
    monkeypatch.setenv(rank_reports.MERGE_TIMEOUT_ENV, "0.3")
    # Rank 2 ran earlier with another master port: a different launch, not merged.
    _rank_env(monkeypatch, 2, port="1234")
    assert rank_reports.write_report(report, _document())
    _rank_env(monkeypatch, 1)
    rank_reports.begin(report)
    written = rank_reports.write_report(report, _document(status=1))
    assert written == rank_reports.Written(1, str(tmp_path / "r.rank1.json"), 1)
    assert rank_reports.pointer_line(written) == (
        f"amplint: rank 1: 1 AMP finding(s), report in {tmp_path / 'r.rank1.json'} "
        "(rank 0 prints the merged summary)"
    )
    assert not os.path.exists(report)  # only rank 0 writes the merged report
    assert _read(tmp_path / "r.rank1.json")["findings"][0]["rank"] == 1
    _rank_env(monkeypatch, 0)
    started = time.monotonic()
    written = rank_reports.write_report(report, _document())
    assert 0.3 <= time.monotonic() - started < 5
    merged = _read(Path(report))
    assert merged["ranks"] == [0, 1] and merged["missing_ranks"] == [2]
    assert _codes(merged) == [("AMP006", 20, [0, 1], 2)]
    assert merged["exit_status"] == 1
    assert written.merged == merged
    assert written == rank_reports.Written(0, str(tmp_path / "r.rank0.json"), 1, merged)
    table = rank_reports.format_merged_summary(merged).splitlines()
    assert table[0] == (
        "amplint: 1 AMP finding(s), merged from rank(s) 0, 1 (no report from rank(s) 2)"
    )
    assert table[1].split() == ["location", "code", "count", "first", "step", "ranks"]
    assert table[2].split() == ["/t/train.py:20", "AMP006", "2", "0", "0,1"]
    assert merged["rank_reports"] == {"0": "r.rank0.json", "1": "r.rank1.json"}
    # Rank 2 of this launch ends after rank 0 gave up waiting: it merges itself in.
    _rank_env(monkeypatch, 2)
    assert rank_reports.write_report(report, _document(status=143))
    merged = _read(Path(report))
    assert merged["ranks"] == [0, 1, 2] and merged["missing_ranks"] == []
    assert _codes(merged) == [("AMP006", 20, [0, 1, 2], 3)]
    assert merged["exit_statuses"] == {"0": 0, "1": 1, "2": 143}
    assert sorted(os.listdir(tmp_path)) == [
        "r.json",
        "r.rank0.json",
        "r.rank1.json",
        "r.rank2.json",
    ]


@pytest.mark.usefixtures("quiet")
def test_report_and_summaries_of_ranks_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``amplint run`` as rank 1 then rank 0 of one launch, in this process: report() gives
    the rank, rank 1 prints one line, rank 0 the merged table and nothing of its own."""
    script = tmp_path / "train.py"
    script.write_text(CLIPS_SCALED_ALONE)
    report = str(tmp_path / "r.json")
    monkeypatch.setenv(rank_reports.MERGE_TIMEOUT_ENV, "5")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "29501")
    line = _line(CLIPS_SCALED_ALONE, "# AMP006")
    outputs = {}
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        assert run_script(str(script), [], "warn", report, health=True) == 0
        findings = ar.report()
        assert [(f.code, f.line, f.rank) for f in findings] == [("AMP006", line, rank)]
        assert findings[0].to_dict()["rank"] == rank
        outputs[rank] = capsys.readouterr()
        ar.reset()
    assert outputs[1].out == outputs[0].out == "trained\n"
    assert outputs[1].err == (
        f"amplint: rank 1: 1 AMP finding(s), report in {tmp_path / 'r.rank1.json'} "
        "(rank 0 prints the merged summary)\n"
    )
    err = outputs[0].err.splitlines()
    assert err[0] == "amplint: 1 AMP finding(s), merged from rank(s) 0, 1"
    assert err[2].split() == [f"{script}:{line}", "AMP006", "4", "0", "0,1"]
    assert sum("AMP finding(s)" in text for text in err) == 1
    assert sum(text.startswith("amplint: numerical health over 2") for text in err) == 1
    merged = _read(Path(report))
    assert _codes(merged) == [("AMP006", line, [0, 1], 4)]
    # Outside a distributed run: no rank anywhere.
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name)
    reporting.emit("AMP006", "m", (str(script), line))
    (finding,) = ar.report()
    assert finding.rank is None and "rank" not in finding.to_dict()


CLIPS_SCALED_ALONE = textwrap.dedent(
    """\
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    for step in range(2):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(torch.randn(4, 8)).float().pow(2).mean()
        scaler.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # AMP006
        scaler.step(opt)
        scaler.update()
    print("trained")
    """
)


def test_not_distributed_without_a_world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert ranks.rank_info() is None
    assert not rank_reports.write_report(str(tmp_path / "r.json"), _document())
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert ranks.rank_info() is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert ranks.rank_info() == ranks.RankInfo(0, 2, 0)
    assert os.listdir(tmp_path) == []


INSTALL_CHECK = textwrap.dedent(
    """\
    import pickle
    import sys
    import amplint.runtime as ar

    ar.install()  # before FSDP is imported: patched when the user's code imports it
    assert "torch.distributed.fsdp" not in sys.modules  # not imported for us
    import torch.distributed.fsdp as fsdp
    import torch.distributed.fsdp.sharded_grad_scaler as module
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    ours = ShardedGradScaler
    assert ours is module.ShardedGradScaler is ar.ShardedGradScaler, ours
    assert "amplint" not in type(module.__loader__).__module__, module.__loader__
    original = ours.__mro__[2]
    assert original.__module__ == module.__name__
    assert issubclass(ours, original) and issubclass(ours, ar.GradScaler)
    scaler = ours("cpu", 8.0, 0.25, 4.0)  # torch's order: backoff before growth
    assert (scaler.get_scale(), scaler._backoff_factor, scaler._growth_factor) == (8.0, 0.25, 4.0)
    reference = original("cpu", 8.0, 0.25, 4.0)
    assert scaler.state_dict() == reference.state_dict()
    assert type(pickle.loads(pickle.dumps(scaler))) is ours
    ar.uninstall()
    assert module.ShardedGradScaler is original and "ShardedGradScaler" not in vars(fsdp)
    assert not any(type(f).__module__.startswith("amplint") for f in sys.meta_path)

    ar.install()  # after the import: patched at once
    assert module.ShardedGradScaler is ours
    ar.uninstall()
    assert module.ShardedGradScaler is original
    print("ok")
    """
)


def test_install_patches_sharded_grad_scaler_and_uninstall_restores_it(tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text(INSTALL_CHECK)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
