"""What people actually run, trained for real on small CPU models: correct recipes stay
silent, the summary tells the truth about each scaler, and a mistake is blamed right.

Each test trains a few steps of a real model with float16 CPU autocast; none mocks torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import amplint.runtime as ar
import pytest
import torch
from amplint.runtime.summary_text import format_health_summary
from runtime_helpers import here
from torch import nn
from torch.utils.checkpoint import checkpoint

FP16 = torch.float16


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Block(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


class Net(nn.Module):
    def __init__(self, reentrant: bool | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(16, 1)
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.reentrant is None:
                x = block(x)
            else:
                x = checkpoint(block, x, use_reentrant=self.reentrant)
        return self.head(x)


def data(steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 16, generator=generator), torch.randn(8, 1, generator=generator))
        for _ in range(steps)
    ]


def parameters_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# Recipes that must stay silent ------------------------------------------------------------


@pytest.mark.parametrize("reentrant", [True, False])
def test_activation_checkpointing_trains_silently_and_identically(reentrant: bool) -> None:
    def train() -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = Net(reentrant=reentrant)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
        for x, y in data(4):
            x.requires_grad_(reentrant)  # reentrant checkpointing needs an input with grad
            with torch.autocast("cpu", dtype=FP16):
                loss = nn.functional.mse_loss(model(x).float(), y)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        return parameters_of(model)

    plain = train()
    with ar.checking(health=True) as seen:
        checked = train()
    assert seen.findings == []
    assert all(torch.equal(a, b) for a, b in zip(plain, checked, strict=True))


def test_gradient_penalty_recipe_with_autograd_grad_is_silent() -> None:
    """PyTorch's AMP recipe: grads of the scaled loss with autograd.grad, unscaled by hand,
    a penalty term computed under autocast, then the usual scaled backward."""
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=True) as seen:
        scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
        for x, y in data(4):
            with torch.autocast("cpu", dtype=FP16):
                loss = nn.functional.mse_loss(model(x).float(), y)
            params = list(model.parameters())
            scaled_grads = torch.autograd.grad(scaler.scale(loss), params, create_graph=True)
            inverse = 1.0 / scaler.get_scale()
            grads = [g * inverse for g in scaled_grads]
            with torch.autocast("cpu", dtype=FP16):
                penalty = torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt()
                loss = loss + penalty
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    assert seen.findings == []


def test_several_models_and_losses_on_one_scaler_is_silent() -> None:
    """PyTorch's recipe: two models, two optimizers, two losses, one scaler."""
    torch.manual_seed(0)
    first, second = Net(), Net()
    opt_first = torch.optim.SGD(first.parameters(), lr=0.05)
    opt_second = torch.optim.Adam(second.parameters(), lr=1e-3)
    with ar.checking(health=True) as seen:
        scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
        for x, y in data(4):
            with torch.autocast("cpu", dtype=FP16):
                out_first, out_second = first(x), second(x)
                loss_first = nn.functional.mse_loss((out_first + out_second).float(), y)
                loss_second = nn.functional.mse_loss((out_first - out_second).float(), y)
            scaler.scale(loss_first).backward(retain_graph=True)
            scaler.scale(loss_second).backward()
            scaler.unscale_(opt_first)
            nn.utils.clip_grad_norm_(first.parameters(), 1.0)
            scaler.step(opt_first)
            scaler.step(opt_second)
            scaler.update()
            opt_first.zero_grad()
            opt_second.zero_grad()
        summary = ar.summary()
    assert seen.findings == []
    assert summary is not None and len(summary["scalers"]) == 1


class DecoratedForward(Net):
    @torch.autocast("cpu", dtype=FP16)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).float()


def test_autocast_as_a_decorator_on_forward_is_silent() -> None:
    torch.manual_seed(0)
    model = DecoratedForward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=True) as seen:
        scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
        for x, y in data(4):
            loss = nn.functional.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    assert seen.findings == []


# Two scalers: a GAN ------------------------------------------------------------------------


def train_gan(steps: int = 6) -> tuple[int, int]:
    """A small GAN with one scaler per network; returns the two construction lines."""
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8))
    critic = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(critic.parameters(), lr=1e-3)
    line_g = here() + 1
    scaler_g = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    line_d = here() + 1
    scaler_d = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    bce = nn.BCEWithLogitsLoss()
    real = torch.randn(steps, 8, 8)
    for step in range(steps):
        noise = torch.randn(8, 4)
        with torch.autocast("cpu", dtype=FP16):
            fake = generator(noise)
            d_loss = bce(critic(real[step]).float(), torch.ones(8, 1)) + bce(
                critic(fake.detach()).float(), torch.zeros(8, 1)
            )
        opt_d.zero_grad()
        scaler_d.scale(d_loss).backward()
        scaler_d.step(opt_d)
        scaler_d.update()
        with torch.autocast("cpu", dtype=FP16):
            g_loss = bce(critic(fake).float(), torch.ones(8, 1))
        opt_g.zero_grad()
        scaler_g.scale(g_loss).backward()
        scaler_g.step(opt_g)
        scaler_g.update()
    return line_g, line_d


def test_two_scalers_each_get_their_own_summary_entry_and_text() -> None:
    with ar.checking(health=True) as seen:
        line_g, line_d = train_gan()
        summary = ar.summary()
        histories = ar.health.histories()
    assert seen.findings == []
    assert summary is not None
    sites = {entry["site"]: entry for entry in summary["scalers"]}
    assert set(sites) == {f"{__file__}:{line_g}", f"{__file__}:{line_d}"}
    for entry, init_scale in (
        (sites[f"{__file__}:{line_g}"], 2.0**10),
        (sites[f"{__file__}:{line_d}"], 2.0**12),
    ):
        assert entry["steps"] == 6 and entry["skipped_steps"] == 0
        assert entry["scale"]["min"] == init_scale
    # The top-level fields stay those of one scaler, as for a single-scaler run.
    assert summary["steps"] == 6 and set(summary["scale"]) == {"min", "max", "final"}
    text = format_health_summary(summary)
    assert text.splitlines()[0] == "amplint: numerical health of 2 GradScalers:"
    assert f"GradScaler constructed at {__file__}:{line_g}: 6 step(s), 0 skipped" in text
    assert f"GradScaler constructed at {__file__}:{line_d}: 6 step(s), 0 skipped" in text
    assert sorted(entry["site"] for entry in histories) == sorted(sites)
    assert [entry["main"] for entry in histories].count(True) == 1


def test_scalers_constructed_on_one_line_are_told_apart_in_construction_order() -> None:
    torch.manual_seed(0)
    first_model, second_model = nn.Linear(16, 1), nn.Linear(16, 1)
    first_opt = torch.optim.SGD(first_model.parameters(), lr=0.05)
    second_opt = torch.optim.SGD(second_model.parameters(), lr=0.05)
    with ar.checking(health=True) as seen:
        line = here() + 1
        first, second = [torch.amp.GradScaler("cpu", init_scale=s) for s in (2.0**8, 2.0**10)]
        for x, y in data(3):
            # the second scaler is used first: the labels follow construction, not use
            for model, opt, scaler in (
                (second_model, second_opt, second),
                (first_model, first_opt, first),
            ):
                with torch.autocast("cpu", dtype=FP16):
                    loss = nn.functional.mse_loss(model(x).float(), y)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()
        summary = ar.summary()
        histories = ar.health.histories()
    assert seen.findings == []
    assert summary is not None
    site = f"{__file__}:{line}"
    entries = summary["scalers"]
    assert [entry["site"] for entry in entries] == [site, site]
    assert [entry["label"] for entry in entries] == [f"{site}, 1 of 2", f"{site}, 2 of 2"]
    assert [entry["scale"]["min"] for entry in entries] == [2.0**8, 2.0**10]
    assert [entry["label"] for entry in histories] == [f"{site}, 1 of 2", f"{site}, 2 of 2"]
    text = format_health_summary(summary)
    assert f"GradScaler constructed at {site}, 1 of 2: 3 step(s)" in text
    assert f"GradScaler constructed at {site}, 2 of 2: 3 step(s)" in text


# AMP104 on the gradients backward produced -------------------------------------------------


def test_clipping_scaled_gradients_is_amp006_not_an_underflow_false_alarm() -> None:
    """Clipping before unscale_ shrinks the scaled gradients under float16's smallest normal;
    the underflow share must be that of the gradients backward produced (tiny here)."""
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=True, underflow_every=1) as seen:
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
        for x, y in data(3):
            with torch.autocast("cpu", dtype=FP16):
                loss = nn.functional.mse_loss(model(x).float(), y)
            scaler.scale(loss).backward()
            clip_line = here() + 1
            nn.utils.clip_grad_norm_(model.parameters(), 1e-4)  # AMP006: still scaled
            scaler.unscale_(optimizer)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
        summary = ar.summary()
    assert [(f.code, f.line) for f in seen.findings] == [("AMP006", clip_line)]
    assert summary is not None and summary["grad_underflow_share"] < 0.1


# Forked children ---------------------------------------------------------------------------

FORKING_SCRIPT = textwrap.dedent(
    """
    import multiprocessing
    import os

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset


    def square(value):
        return value * value


    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    dataset = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context="fork")
    for x, y in loader:
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    pid = os.fork()
    if pid == 0:  # a child that returns into the script and ends as scripts do
        print("child done", flush=True)
        raise SystemExit(0)
    os.waitpid(pid, 0)
    pool = multiprocessing.get_context("fork").Pool(2)
    print("squares", pool.map(square, range(4)))
    # the pool is left open, as scripts do
    """
)


def test_forked_children_stay_silent_and_the_run_ends_cleanly(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(FORKING_SCRIPT, encoding="utf-8")
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "amplint.runtime.runner", "--report", str(report), str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "squares [0, 1, 4, 9]" in done.stdout and "child done" in done.stdout
    assert done.stderr.count("amplint: numerical health") == 1, done.stderr
    assert "Bad file descriptor" not in done.stderr and "Traceback" not in done.stderr
    assert json.loads(report.read_text())["summary"]["steps"] == 4


def test_a_forked_child_dies_of_sigterm_in_the_kernel_as_under_plain_python(
    tmp_path: Path,
) -> None:
    # A Python-level handler runs between bytecodes: a pool worker that took the pool's
    # SIGTERM just before blocking on its task queue's lock never ran it, and the exit of
    # the script waited for it forever. The child must have the default action back.
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            import signal

            parent = signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
            pid = os.fork()
            if pid == 0:
                default = signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
                print(f"child default {default}", flush=True)
                os._exit(0)
            os.waitpid(pid, 0)
            print(f"parent handled {parent}", flush=True)
            """
        ),
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "amplint.runtime.runner", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "parent handled True" in done.stdout  # amplint still writes its report on SIGTERM
    assert "child default True" in done.stdout


# Torch's own deprecation warnings ------------------------------------------------------------


def test_torchs_deprecation_warning_once_per_location_as_under_plain_python(
    tmp_path: Path,
) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            model = nn.Linear(4, 2)
            for step in range(12):
                with torch.cpu.amp.autocast():
                    model(torch.randn(2, 4))
            """
        ),
        encoding="utf-8",
    )

    def future_warnings(*command: str) -> int:
        done = subprocess.run(
            [sys.executable, *command, str(script)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stderr.count("FutureWarning")

    assert future_warnings() == 1
    assert future_warnings("-m", "amplint.runtime.runner", "--no-health") == 1
    # torch.cuda.amp.autocast() on a machine without CUDA: torch also disables it, with a
    # warning amplint shows at the user's line, which must not make Python forget that the
    # FutureWarning was shown there (it came back on the second iteration).
    script.write_text(script.read_text().replace("torch.cpu.amp", "torch.cuda.amp"))
    assert future_warnings() == 1
    assert future_warnings("-m", "amplint.runtime.runner", "--no-health") == 1


def test_torchs_own_warnings_point_at_the_users_lines_as_under_plain_python(
    tmp_path: Path,
) -> None:
    """torch warns from inside calls amplint's stand-ins make (a GradScaler or autocast that
    torch disables, a scheduler stepped before the optimizer): shown at the user's line,
    once per location, never at amplint's file."""
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            model = nn.Linear(4, 2)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
            for step in range(3):
                with torch.autocast("cpu", dtype=torch.float32):  # torch disables it
                    model(torch.randn(2, 4))
            scheduler.step()
            """
        ),
        encoding="utf-8",
    )

    def warned(*command: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, *command, str(script)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return [line for line in done.stderr.splitlines() if "UserWarning" in line]

    plain = warned()
    assert len(plain) == 2 and all(line.startswith(f"{script}:") for line in plain)
    assert warned("-m", "amplint.runtime.runner", "--no-health") == plain


# amplint run -m ------------------------------------------------------------------------------

# The console script installed next to this interpreter, as users run it.
AMPLINT = str(Path(sys.executable).parent / "amplint")


def test_run_module_as_python_dash_m(tmp_path: Path) -> None:
    package = tmp_path / "trainer"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "main.py").write_text(
        textwrap.dedent(
            """
            import sys

            import torch
            from torch import nn

            print("argv", sys.argv[1:], __name__)
            model = nn.Linear(4, 1)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            with torch.autocast("cpu", dtype=torch.float16):
                loss = model(torch.randn(3, 4)).float().mean()
            loss.backward()
            optimizer.step()
            """
        ),
        encoding="utf-8",
    )
    done = subprocess.run(
        [AMPLINT, "run", "-m", "trainer.main", "--lr", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "argv ['--lr', '3'] __main__" in done.stdout
    assert "AMP003" in done.stderr and str(package / "main.py") in done.stderr
    missing = subprocess.run(
        [AMPLINT, "run", "-m", "no_such_module"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith("No module named no_such_module")


def test_run_a_package_in_the_working_folder_as_python_does(tmp_path: Path) -> None:
    """`python -m pkg` and `python pkg` run ``pkg/__main__.py``; a folder named on the
    command line is not a file name mistake."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "__main__.py").write_text(
        "import sys\nprint('ran', sys.argv, __file__)\n", encoding="utf-8"
    )
    (tmp_path / "empty").mkdir()
    for target in (["-m", "pkg"], ["pkg"], ["empty"], ["empty/"]):
        command = [*target, "x"]
        plain = subprocess.run(
            [sys.executable, *command], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        checked = subprocess.run(
            [AMPLINT, "run", *command], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert checked.returncode == plain.returncode, (target, checked.stderr)
        assert checked.stdout == plain.stdout
        own = [line for line in checked.stderr.splitlines() if not line.startswith("amplint:")]
        # Python names itself first (`.../python3: can't find ...`): the words after it.
        assert [line.split(": ", 1)[-1] for line in own] == [
            line.split(": ", 1)[-1] for line in plain.stderr.splitlines()
        ]
        if target[-1] == "pkg":
            assert plain.stdout.startswith("ran [")


FINALISING_SCRIPT = textwrap.dedent(
    """
    import atexit
    import sys
    import tempfile

    name = "checkpointer"

    class Checkpointer:
        def __del__(self):
            print("finalised", name, file=sys.stderr, flush=True)

    keeper = Checkpointer()
    scratch = tempfile.NamedTemporaryFile(prefix="amplint-scratch-", dir=sys.argv[1])
    atexit.register(lambda: print("atexit", file=sys.stderr, flush=True))
    """
)


@pytest.mark.parametrize("as_module", [False, True])
def test_script_globals_are_finalised_at_exit_as_under_python(
    tmp_path: Path, as_module: bool
) -> None:
    """Python frees __main__ at shutdown: its objects' ``__del__`` run with their globals
    intact (a temporary file deletes itself). Under ``amplint run`` too, also with ``-m``."""
    package = tmp_path / "job"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "main.py").write_text(FINALISING_SCRIPT, encoding="utf-8")
    target = ["-m", "job.main"] if as_module else [str(package / "main.py")]

    def lines(*command: str) -> list[str]:
        done = subprocess.run(
            [*command, *target, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert not list(tmp_path.glob("amplint-scratch-*"))  # the temporary file went
        return [line for line in done.stderr.splitlines() if not line.startswith("amplint")]

    expected = ["atexit", "finalised checkpointer"]
    assert lines(sys.executable) == expected
    assert lines(AMPLINT, "run") == expected


# The summary's lines say what they mean ------------------------------------------------------


def scaled_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    steps: int,
    dtype: torch.dtype = FP16,
) -> None:
    """PyTorch's AMP recipe on ``data(steps)``: the loop every summary test trains."""
    for x, y in data(steps):
        with torch.autocast("cpu", dtype=dtype):
            loss = nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()


def test_a_direct_step_after_unscale_that_applies_an_overflow_is_the_cause_named_after() -> None:
    """torchvision's and yolov5's clipping loop with ``optimizer.step()`` for
    ``scaler.step``: the first overflow is applied, not skipped. AMP004 says so, what
    follows names it as the cause, and no step counts as skipped."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with ar.checking(health=True) as seen:
        scaler = torch.amp.GradScaler("cpu")
        for _ in range(6):
            x = torch.randn(16, 8) * 3
            with torch.autocast("cpu", dtype=FP16):
                loss = model(x).float().pow(2).sum()  # 65536 times this overflows float16
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            step_line = here() + 1
            optimizer.step()
            scaler.update()
            optimizer.zero_grad()
        summary = ar.summary()
    by_code = {f.code: f for f in seen.findings}
    assert by_code["AMP004"].line == step_line
    assert "after scaler.unscale_(optimizer)" in by_code["AMP004"].message
    assert "inf/NaN is applied instead of skipped" in by_code["AMP004"].message
    assert "AMP105" not in by_code  # the NaN outputs come from the weights, not a module
    assert "applied at step 0 (AMP004)" in by_code["AMP101"].message
    assert summary is not None and summary["skipped_steps"] == 0
    assert summary["first_overflow"]["after_nonfinite_code"] == "AMP004"


def test_a_direct_step_on_still_scaled_gradients_is_the_cause_of_the_overflow_after_it(
    quiet: None,
) -> None:
    """``optimizer.step()`` on finite gradients still multiplied by 65536, and no update():
    the weights take a step 65536 times too large and the next forward overflows. That is
    AMP004's consequence, not a module to run in float32; and the outputs of each
    iteration keep their own step number though no update() handed them over."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=True) as seen:
        scaler = torch.amp.GradScaler("cpu")
        for _ in range(3):
            x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=FP16):
                loss = nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            optimizer.step()
        summary = ar.summary()
    assert [(f.code, f.first_step) for f in seen.findings] == [("AMP004", 0)]
    assert summary is not None
    overflow = summary["first_overflow"]
    assert (overflow["step"], overflow["after_scaled_step"]) == (1, 0)


def test_summary_with_a_disabled_scaler_says_steps_ran_but_nothing_was_scaled() -> None:
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=True) as seen:
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        scaled_steps(model, optimizer, scaler, 3)
        summary = ar.summary()
    assert seen.findings == []
    assert summary is not None
    text = format_health_summary(summary)
    assert "no GradScaler step seen" not in text
    assert text == (
        "amplint: numerical health: 3 training step(s) ran, none followed by update() of "
        "an enabled GradScaler: no loss-scale statistics"
    )


def test_summary_of_a_run_without_any_gradscaler_says_none_was_built() -> None:
    """A bfloat16 loop needs no scaler: the summary must not read as if one were missing
    its update()."""
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=True) as seen:
        for x, y in data(3):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = nn.functional.mse_loss(model(x).float(), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        summary = ar.summary()
    assert seen.findings == []
    assert summary is not None and summary["gradscalers_built"] == 0
    assert format_health_summary(summary) == (
        "amplint: numerical health: 3 training step(s) ran and no GradScaler was built: no "
        "loss-scale statistics (only float16 autocast needs one)"
    )


def test_summary_explains_an_unmeasured_underflow_share_and_a_near_overflow() -> None:
    """Step 0, the only statistics step here, is skipped (init_scale overflows float16):
    the share is "not measured", and says why, instead of an unexplained "n/a"."""
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=True) as seen:
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
        scaled_steps(model, optimizer, scaler, 3)
        summary = ar.summary()
    assert seen.findings == []
    assert summary is not None and summary["skipped_steps"] >= 1
    text = format_health_summary(summary)
    assert "n/a" not in text
    assert (
        "gradient underflow share: not measured (the gradients are counted on steps 0, 16" in text
    )
    assert "float16 module outputs of training steps: none reached 32752, the AMP105" in text


def test_summary_of_a_bfloat16_run_with_a_scaler_has_no_float16_underflow_share() -> None:
    """A scaler around bfloat16 autocast (AMP014): float16's underflow does not apply."""
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=True):
        scaler = torch.amp.GradScaler("cpu")
        scaled_steps(model, optimizer, scaler, 3, torch.bfloat16)
        summary = ar.summary()
    assert summary is not None and summary["autocast_dtypes"] == ["bfloat16"]
    text = format_health_summary(summary)
    assert "gradient underflow share: not applicable (only bfloat16 autocast)" in text
    assert "below float16's smallest normal" not in text
    # Nothing was compiled, and no float16 output could be measured: said as such.
    assert (
        "float16 module outputs of training steps: not applicable (autocast ran in bfloat16 "
        "only)" in text
    )
    assert "compiled" not in text


def test_summary_of_a_scaler_loop_without_autocast_says_no_region_ran() -> None:
    """A GradScaler around a float32 loop (no autocast at all): no float16 output to
    measure, said plainly."""
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=True):
        scaler = torch.amp.GradScaler("cpu")
        for x, y in data(3):
            loss = nn.functional.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
        summary = ar.summary()
    assert summary is not None and summary["autocast_dtypes"] == []
    text = format_health_summary(summary)
    assert "float16 module outputs of training steps: none seen (no autocast region ran)" in text


def test_summary_shows_a_scaler_per_fold_one_by_one(quiet: None) -> None:
    """Cross-validation builds a scaler per fold at one line, each for many steps: no
    AMP010, and the summary gives each its own block, not the rebuilt-scaler line."""
    torch.manual_seed(0)
    with ar.checking(health=True) as seen:
        for _fold in range(4):
            model = Net()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
            scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
            scaled_steps(model, optimizer, scaler, 3)
        summary = ar.summary()
    assert "AMP010" not in {f.code for f in seen.findings}
    assert summary is not None and len(summary["scalers"]) == 4
    assert not any(entry["rebuilt_every_step"] for entry in summary["scalers"])
    text = format_health_summary(summary)
    assert "AMP010" not in text and "one after another" not in text
    assert text.count("loss scale: min") == 4
    assert summary["steps"] == 3  # the top-level fields are the main scaler's, as with two


def _build(init_scale: float) -> tuple[Net, torch.optim.Optimizer, torch.amp.GradScaler]:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    return model, optimizer, torch.amp.GradScaler("cpu", init_scale=init_scale)


def test_a_run_resumed_on_new_objects_is_one_run_to_the_summary(quiet: None) -> None:
    """PyTorch's checkpoint recipe mid-run: save, build model, optimizer and scaler anew
    at the same line, load the three states, go on. The summary's top level is the whole
    run, and a finding after the resume names the run's iteration, as the user counts."""
    torch.manual_seed(0)
    resume_at, steps = 4, 8
    with ar.checking(health=True) as seen:
        model, optimizer, scaler = _build(1.0)
        for step, (x, y) in enumerate(data(steps)):
            with torch.autocast("cpu", dtype=FP16):
                loss = nn.functional.mse_loss(model(x).float(), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            if step == resume_at - 1:
                saved = (model.state_dict(), optimizer.state_dict(), scaler.state_dict())
                model, optimizer, scaler = _build(2.0**16)
                model.load_state_dict(saved[0])
                optimizer.load_state_dict(saved[1])
                scaler.load_state_dict(saved[2])
                with torch.no_grad():  # the outputs overflow float16 from now on
                    model.blocks[0].fc1.weight.mul_(1e5)
        summary = ar.summary()
    assert summary is not None
    assert [(entry["first_step"], entry["steps"]) for entry in summary["scalers"]] == [
        (0, resume_at),
        (resume_at, steps - resume_at),
    ]
    assert summary["steps"] == steps
    assert summary["skipped_steps"] == steps - resume_at
    assert summary["scale"]["max"] == 1.0 and summary["scale"]["final"] < 1.0
    assert summary["first_overflow"]["step"] == resume_at
    (overflow,) = [finding for finding in seen.findings if finding.code == "AMP105"]
    assert overflow.first_step == resume_at and f"at step {resume_at}" in overflow.message


def test_folds_that_each_load_one_pretrained_scaler_stay_separate_runs(quiet: None) -> None:
    """Each fold loads the same pretrained state: none continues the fold before it (the
    state it loaded is not what that fold saved), so the top level is one fold's."""
    torch.manual_seed(0)
    pretrained = torch.amp.GradScaler("cpu", init_scale=2.0**8).state_dict()
    with ar.checking(health=True):
        for _fold in range(3):
            model = Net()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
            scaler = torch.amp.GradScaler("cpu")
            scaler.load_state_dict(pretrained)
            scaled_steps(model, optimizer, scaler, 3)
            scaler.state_dict()  # each fold saves its own at the end
        summary = ar.summary()
    assert summary is not None and len(summary["scalers"]) == 3
    assert summary["steps"] == 3


Scaler = torch.amp.GradScaler


def test_two_scalers_from_one_line_each_resume_their_own(quiet: None) -> None:
    """A GAN builds its discriminator's and generator's scalers on one line, and resumes on
    new ones: each new scaler continues the one whose state it loaded, not its neighbour."""
    torch.manual_seed(0)

    def build() -> tuple[Net, Net, torch.optim.Optimizer, torch.optim.Optimizer, Scaler, Scaler]:
        first, second = Net(), Net()
        optimizers = (
            torch.optim.SGD(first.parameters(), lr=0.0),
            torch.optim.SGD(second.parameters(), lr=0.0),
        )
        scalers = (torch.amp.GradScaler("cpu"), torch.amp.GradScaler("cpu", init_scale=8.0))
        return first, second, *optimizers, *scalers

    with ar.checking(health=True):
        first, second, opt_a, opt_b, scaler_a, scaler_b = build()
        for iteration, (x, y) in enumerate(data(6)):
            for model, optimizer, scaler in ((first, opt_a, scaler_a), (second, opt_b, scaler_b)):
                with torch.autocast("cpu", dtype=FP16):
                    loss = nn.functional.mse_loss(model(x).float(), y)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
            if iteration == 2:
                saved = [part.state_dict() for part in (first, second, opt_a, opt_b)]
                states = (scaler_a.state_dict(), scaler_b.state_dict())
                first, second, opt_a, opt_b, scaler_a, scaler_b = build()
                for part, state in zip((first, second, opt_a, opt_b), saved, strict=True):
                    part.load_state_dict(state)
                scaler_a.load_state_dict(states[0])
                scaler_b.load_state_dict(states[1])
        summary = ar.summary()
    assert summary is not None and summary["steps"] == 6
    # One network's scale throughout: 8 is the second network's, never the first's.
    assert summary["scale"]["min"] > 8.0 or summary["scale"]["max"] == 8.0


def test_summary_groups_a_scaler_rebuilt_every_step_into_one_line(quiet: None) -> None:
    """AMP010's loop builds a scaler per step: one summary line for them, not a block each
    (the JSON report keeps one entry per scaler)."""
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=True) as seen:
        for x, y in data(6):
            scaler = torch.amp.GradScaler("cpu")
            with torch.autocast("cpu", dtype=FP16):
                loss = nn.functional.mse_loss(model(x).float(), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
        summary = ar.summary()
    assert "AMP010" in {f.code for f in seen.findings}
    assert summary is not None and len(summary["scalers"]) == 6
    lines = format_health_summary(summary).splitlines()
    assert lines[0] == "amplint: numerical health of 6 GradScalers:"
    assert "6 GradScalers constructed one after another at" in lines[1]
    # A fresh scaler starts at 65536 every step: here every step overflowed and was skipped.
    assert "(AMP010): 6 step(s) in all, 6 skipped (100.0%)" in lines[1]
    assert len(lines) == 3  # and the float16 outputs line
    # The top-level fields count the rebuilt scaler's steps as one scaler's.
    assert (summary["steps"], summary["skipped_steps"]) == (6, 6)
    assert summary["scale"]["final"] == summary["scalers"][-1]["scale"]["final"]


# AMP021: the scaler's state read on every iteration -------------------------------------


def _logging_state_every(
    every: int, steps: int, *, as_if_on_a_device: bool
) -> tuple[list[str], list[int]]:
    """The recipe, reading the scaler's state every ``every`` iterations. The scale of a CPU
    scaler lives on the host (reading it costs nothing); ``as_if_on_a_device`` hands the
    reads to the usage check as a CUDA scaler's would be, to follow its counting on CPU."""
    from amplint.runtime import usage

    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    codes, at = [], []
    with ar.checking(health=False) as seen:
        scaler = torch.amp.GradScaler("cpu")
        for step in range(steps):
            scaled_steps(model, optimizer, scaler, 1)
            if step % every == 0:
                if as_if_on_a_device:
                    verdicts = usage.on_state_dict(scaler._usage(), syncs=True)  # type: ignore[attr-defined]
                    codes += [v.code for v in verdicts]
                    at += [step] * len(verdicts)
                else:
                    scaler.state_dict()
        codes += [f.code for f in seen.findings]
    return codes, at


def test_state_dict_on_every_iteration_of_a_cpu_scaler_is_no_sync() -> None:
    assert _logging_state_every(1, 14, as_if_on_a_device=False)[0] == []


def test_state_dict_of_a_device_scale_on_ten_iterations_in_a_row_is_amp021() -> None:
    codes, at = _logging_state_every(1, 14, as_if_on_a_device=True)
    assert (codes, at) == (["AMP021"], [9])  # once, on the tenth
    # Every other iteration is a logging interval: no finding.
    assert _logging_state_every(2, 30, as_if_on_a_device=True)[0] == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_state_dict_of_a_cuda_scaler_on_every_iteration_is_reported() -> None:
    model = nn.Linear(16, 1).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking(health=False) as seen:
        scaler = torch.amp.GradScaler("cuda")
        for x, y in data(12):
            with torch.autocast("cuda", dtype=FP16):
                loss = nn.functional.mse_loss(model(x.cuda()).float(), y.cuda())
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            print(scaler.state_dict()["scale"])
    assert [f.code for f in seen.findings] == ["AMP021"]
