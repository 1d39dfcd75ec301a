"""Numerical health's contract: same numerics, no host reads in a step, summary, report."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import amplint.runtime as ar
import pytest
import torch
from amplint.runtime import health
from torch import nn

pytestmark = pytest.mark.usefixtures("quiet")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny models: intra-op threads only contend (seconds per run on a loaded machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


READBACKS = ("item", "__bool__", "__float__", "__int__", "tolist", "numpy", "cpu")


@contextmanager
def counting_readbacks() -> Iterator[list[int]]:
    counter = [0]
    originals = {name: getattr(torch.Tensor, name) for name in READBACKS}

    def counted(original: Callable[..., object]) -> Callable[..., object]:
        def wrapper(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            counter[0] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(original))
    try:
        yield counter
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def transformer_run(
    steps: int, seed: int = 0, every_step: Callable[[], None] | None = None
) -> tuple[list[torch.Tensor], int]:
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = nn.Sequential(
        nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(32, 1)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
    generator = torch.Generator().manual_seed(seed + 1)
    data = [
        (torch.randn(4, 8, 32, generator=generator), torch.randn(4, 8, 1, generator=generator))
        for _ in range(4)
    ]
    with counting_readbacks() as counter:
        for step in range(steps):
            x, y = data[step % len(data)]
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.float16):
                loss = nn.functional.mse_loss(model(x).float(), y)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
            scaler.step(opt)
            scaler.update()
            sched.step()
    return [p.detach().clone() for p in model.parameters()], counter[0]


def test_parameters_bit_identical_and_no_readback_added() -> None:
    # Run 1 with torch's classes; run 2 with usage and health checks, read every step.
    plain, plain_reads = transformer_run(20)
    with ar.checking("raise", health=True, every=1):
        checked, checked_reads = transformer_run(20)
        findings = ar.report()
        summary = ar.summary()
    assert all(torch.equal(a, b) for a, b in zip(plain, checked, strict=True))
    assert checked_reads == plain_reads
    assert summary is not None and summary["steps"] == 20
    # The default initial scale backs off at the start: skipped, not reported.
    assert summary["skipped_steps"] >= 1 and findings == []


def test_health_off_costs_nothing_and_measures_nothing() -> None:
    with ar.checking("warn"):
        transformer_run(3)
    assert health.active() is None and ar.summary() is None


def test_install_options_and_uninstall() -> None:
    with pytest.raises(TypeError):
        ar.install(health=True, no_such_threshold=1)
    with pytest.raises(ValueError, match="skip_rate"):
        ar.install(skip_rate=2.0)
    assert not ar.installed()
    original_step = torch.optim.lr_scheduler.LRScheduler.step
    hooks = dict(torch.nn.modules.module._global_forward_hooks)
    ar.install(max_backoffs=3)  # a threshold turns health on
    monitor = health.active()
    assert monitor is not None and monitor.config.max_backoffs == 3
    assert torch.optim.lr_scheduler.LRScheduler.step is not original_step
    ar.uninstall()
    assert health.active() is None
    assert torch.optim.lr_scheduler.LRScheduler.step is original_step
    assert dict(torch.nn.modules.module._global_forward_hooks) == hooks


def test_summary_keys_and_report_compatibility() -> None:
    with ar.checking("warn", health=True):
        transformer_run(5)
        summary = ar.summary()
        assert isinstance(ar.report(), list)
    assert summary is not None
    assert {
        "steps",
        "skipped_steps",
        "scale",
        "first_overflow",
        "grad_underflow_share",
        "grad_zero_share",
        "nonfinite_loss_steps",
    } <= set(summary)
    assert set(summary["scale"]) == {"min", "max", "final"}
    json.dumps(summary)


SCRIPT = textwrap.dedent(
    """\
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for step in range(12):
        model[2].weight.data.mul_(1e5 if step == 6 else 1.0)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(torch.randn(4, 8)).float().pow(2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    print("trained")
    """
)


def test_run_script_prints_summary_and_writes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from amplint.runtime.runner import run_script

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    report_path = tmp_path / "r.json"
    status = run_script(
        str(script),
        [],
        mode="log",
        report_path=str(report_path),
        health=True,
        thresholds={"every": 4},
    )
    err = capsys.readouterr().err
    assert status == 0
    assert "amplint: numerical health over 12 step(s)" in err
    # A position in a Sequential is named through the variable that holds it.
    assert "first float16 output near overflow: model.2 (Linear) at step 6, |output| 61376" in err
    document = json.loads(report_path.read_text())
    found = [(f["code"], f["first_step"]) for f in document["findings"]]
    assert found[0] == ("AMP105", 6)
    assert document["summary"]["first_overflow"]["module"] == "model.2"
    assert document["summary"]["steps"] == 12


def test_plot_is_checked_before_the_script_and_its_path_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from amplint.runtime.runner import run_script

    script = tmp_path / "train.py"
    script.write_text(SCRIPT + "print('the script ran')\n")
    plot_path = tmp_path / "p.png"
    status = run_script(str(script), [], health=True, plot_path=str(plot_path))
    captured = capsys.readouterr()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert status == 2
        assert (
            captured.err.strip() == "amplint: --plot needs matplotlib: pip install 'amplint[plot]'"
        )
        assert "the script ran" not in captured.out and not plot_path.exists()
    else:
        assert status == 0
        assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plot of the loss scale written to {plot_path}" in captured.err


def test_cli_run_passes_thresholds(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from amplint.cli import cli

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    report_path = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli,
        [
            "run",
            "--mode",
            "log",
            "--report",
            str(report_path),
            "--overflow-margin",
            "0.1",
            "--every",
            "2",
            str(script),
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(report_path.read_text())
    assert document["summary"]["config"]["overflow_margin"] == 0.1
    assert document["summary"]["config"]["every"] == 2
    result = CliRunner().invoke(
        cli, ["run", "--no-health", "--report", str(report_path), str(script)]
    )
    assert result.exit_code == 0
    assert json.loads(report_path.read_text())["summary"] is None


def test_cli_run_samples_the_iterations_amp105_measures(tmp_path: Path) -> None:
    """The weights blow up at step 6 (AMP105 at step 6 when every iteration is measured,
    see above), which is not measured here (0, 1, then one in 4): its gradients overflow,
    the step is skipped, the next iteration is measured, and AMP105 names it."""
    from click.testing import CliRunner

    from amplint.cli import cli

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    report_path = tmp_path / "r.json"
    sampled = ["--activations-first", "2", "--activations-every", "4"]
    result = CliRunner().invoke(
        cli, ["run", "--mode", "log", "--report", str(report_path), *sampled, str(script)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(report_path.read_text())
    found = [(f["code"], f["first_step"]) for f in document["findings"]]
    assert ("AMP105", 7) in found and ("AMP105", 6) not in found
    summary = document["summary"]
    assert summary["config"]["activations_every"] == 4
    assert summary["activation_iterations"] == 12
    # 0, 1, 4, 7 (after the skipped step 6), 8, and the steps after each later skip
    assert 5 <= summary["activation_iterations_measured"] < 12


def test_cli_run_switches_and_bad_thresholds(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from amplint.cli import cli

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    report_path = tmp_path / "r.json"
    args = ["run", "--mode", "log", "--report", str(report_path), "--no-activations"]
    result = CliRunner().invoke(cli, [*args, str(script)])
    assert result.exit_code == 0, result.output
    assert json.loads(report_path.read_text())["summary"]["config"]["activations"] is False
    marker = tmp_path / "ran"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    for bad in (
        ["--skip-rate", "2"],
        ["--every", "0"],
        ["--activations-every", "0"],
        ["--activations-first", "-1"],
    ):
        result = CliRunner().invoke(cli, ["run", *bad, str(script)])
        assert result.exit_code == 2, result.output
        assert "invalid threshold" in result.output and "Traceback" not in result.output
        assert not marker.exists()
