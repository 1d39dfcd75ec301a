"""torch.compile under amplint: compilation is never the user's backward, and the compiled
model gets the graphs plain torch gives it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import amplint.runtime as ar
import pytest
import torch
import torch._dynamo
import torch._dynamo.utils
from runtime_helpers import Offset, clamp_float16, codes, here
from torch import nn


class AutocastInside(nn.Module):
    """A model whose forward enters its own autocast region, as some recipes do."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(16, 32)
        self.second = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.float16):
            return self.second(torch.relu(self.first(x)))


def _fresh_setup(
    optimizer_class: type[torch.optim.Optimizer],
) -> tuple[nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    """Dynamo's caches and counters emptied; a small model, its optimizer, a scaler."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    return model, optimizer_class(model.parameters(), lr=0.01), torch.amp.GradScaler("cpu")


def _dynamo_counts() -> dict[str, int]:
    counters = torch._dynamo.utils.counters
    return {
        "unique_graphs": counters["stats"]["unique_graphs"],
        "calls_captured": counters["stats"]["calls_captured"],
        "graph_breaks": sum(counters["graph_break"].values()),
        "recompiles": sum(counters["recompiles"].values()),
    }


def _train(compile_model: bool, steps: int = 3) -> tuple[list[float], dict[str, int]]:
    """A correct fp16 loop around a compiled model (backend aot_eager: AOTAutograd traces
    the backward on the first call, as with inductor on a cold cache)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    model = AutocastInside()
    run = torch.compile(model, backend="aot_eager") if compile_model else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu")
    generator = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(8, 16, generator=generator), torch.randn(8, 4, generator=generator)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.mse_loss(run(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        losses.append(loss.item())
    seen = _dynamo_counts()
    return losses, seen


def test_compiled_model_trains_as_plain_with_no_finding_and_no_extra_graph(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plain_losses, plain_counts = _train(compile_model=True)
    assert plain_counts["unique_graphs"] == 1
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ar.checking(health=True) as seen:
            losses, counts = _train(compile_model=True)
    assert seen.findings == []
    assert counts == plain_counts
    assert losses == plain_losses
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "global hooks" in m], messages
    # The compiled region ran inside the loop's autocast: where torch traces its backward
    # under that autocast, amplint says so, once.
    err = capsys.readouterr().err
    setting = torch._functorch.config.backward_pass_autocast
    expected = 1 if setting == "same_as_forward" else 0
    assert err.count("amplint: note: torch compiled the backward") == expected, err


def test_a_float16_region_inside_compiled_code_makes_the_scaler_right() -> None:
    """The compiled model enters float16 autocast in its own forward; a small eager head
    runs under bfloat16. The enabled GradScaler serves the float16 part: no AMP014, and
    the counts of graphs are plain torch's."""

    def train() -> tuple[list[float], dict[str, int]]:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        torch.manual_seed(0)
        body, head = AutocastInside(), nn.Linear(4, 1)
        compiled = torch.compile(body, backend="aot_eager")
        params = [*body.parameters(), *head.parameters()]
        optimizer = torch.optim.SGD(params, lr=0.05)
        scaler = torch.amp.GradScaler("cpu")
        losses = []
        for _ in range(3):
            features = compiled(torch.randn(8, 16)).float()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = head(features)
            loss = out.float().pow(2).mean()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            losses.append(loss.item())
        return losses, _dynamo_counts()

    plain_losses, plain_counts = train()
    with ar.checking(health=True) as seen:
        losses, counts = train()
    assert codes(seen.findings) == []
    assert (losses, counts) == (plain_losses, plain_counts)


class AutocastInsideBfloat16(AutocastInside):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.second(torch.relu(self.first(x)))


@pytest.mark.parametrize("where", ["around", "inside", "inside-bfloat16"])
def test_float16_without_a_scaler_is_reported_with_a_compiled_model(
    where: str, quiet: None
) -> None:
    """float16 autocast and no GradScaler (AMP003), with the autocast around the compiled
    model or inside its forward, where amplint's autocast class is never entered: the
    compiled region's saved activations are float16. bfloat16 needs no scaler."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = AutocastInsideBfloat16() if where == "inside-bfloat16" else AutocastInside()
    if where == "around":
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    run = torch.compile(model, backend="aot_eager")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking() as seen:
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.float16, enabled=where == "around"):
                out = run(torch.randn(8, 16))
            loss = out.float().pow(2).mean()
            line = here() + 1
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    if where == "inside-bfloat16":
        assert codes(seen.findings) == []
        return
    assert codes(seen.findings) == ["AMP003"]
    (finding,) = seen.findings
    assert (finding.line, finding.first_step) == (line, 0)


def _scaler_built_in_compiled_code() -> tuple[dict[str, int], dict[str, int], str]:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()

    @torch.compile(backend="eager")
    def make() -> torch.amp.GradScaler:
        return torch.amp.GradScaler("cpu", init_scale=2.0**8)

    scaler = make()
    frames = dict(torch._dynamo.utils.counters["frames"])
    return _dynamo_counts(), frames, type(scaler).__module__


def test_a_scaler_built_in_compiled_code_gets_plain_torchs_frames() -> None:
    """Dynamo breaks at the constructor (torch's own reason) and counts no frame of amplint's
    constructor: the scaler is amplint's all the same."""
    plain_counts, plain_frames, plain_module = _scaler_built_in_compiled_code()
    with ar.checking():
        counts, frames, module = _scaler_built_in_compiled_code()
    assert (counts, frames) == (plain_counts, plain_frames)
    assert (plain_module, module) == ("torch.amp.grad_scaler", "amplint.runtime.scaler")


def test_no_note_for_a_backend_that_compiles_no_backward(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """backend="eager" runs Dynamo's graph as it is: no backward is compiled, under autocast
    or not, so the note about torch's backward autocast would be false."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    compiled = torch.compile(model, backend="eager")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    capsys.readouterr()
    with ar.checking() as seen:
        scaler = torch.amp.GradScaler("cpu")
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = compiled(torch.randn(4, 8)).float().mean()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    assert seen.findings == []
    assert "amplint: note" not in capsys.readouterr().err


def test_real_backward_inside_autocast_around_compiled_model_is_reported_once(
    quiet: None,
) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    compiled = torch.compile(model, backend="aot_eager")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with ar.checking() as seen:
        scaler = torch.amp.GradScaler("cpu")
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = compiled(torch.randn(4, 8)).float().mean()
                line = here() + 1
                scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    assert codes(seen.findings) == ["AMP001"]
    (finding,) = seen.findings
    assert (finding.filename, finding.line) == (__file__, line)


SCRIPT = textwrap.dedent(
    """
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    compiled = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu")
    for step in range(2):
        x, y = torch.randn(8, 16), torch.randn(8, 4)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.mse_loss(compiled(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    print("trained")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_inductor_compiled_script_under_amplint_run_is_silent(tmp_path: Path, cache: str) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "amplint.runtime.runner", "--no-health", str(script)]
    if cache == "cold":
        env["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
    else:  # fill the cache, then run again
        subprocess.run(command, env=env, capture_output=True, check=True, timeout=600)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "trained" in done.stdout
    assert "AMP0" not in done.stderr
    assert "global hooks" not in done.stderr
    # The note on the compiled backward's autocast holds with a warm cache too, where
    # nothing is traced.
    setting = torch._functorch.config.backward_pass_autocast
    expected = 1 if setting == "same_as_forward" else 0
    assert done.stderr.count("amplint: note: torch compiled the backward") == expected


def _train_with_compiled_clip(steps: int = 3) -> tuple[list[torch.Tensor], dict[str, int]]:
    """unscale_, then a compiled function that clips, then step: the usual loop with the
    clip inside torch.compile (backend eager: Dynamo's tracing is what matters here)."""
    model, optimizer, scaler = _fresh_setup(torch.optim.SGD)

    @torch.compile(backend="eager")
    def clip() -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)

    generator = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x = torch.randn(4, 8, generator=generator)
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(x).float().pow(2).mean()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        clip()
        scaler.step(optimizer)
        scaler.update()
    seen = _dynamo_counts()
    return [p.detach().clone() for p in model.parameters()], seen


def test_a_compiled_clip_gets_the_graphs_plain_torch_gives_it() -> None:
    plain_params, plain_counts = _train_with_compiled_clip()
    assert plain_counts["unique_graphs"] == 1
    with ar.checking(health=True) as seen:
        params, counts = _train_with_compiled_clip()
    assert seen.findings == []
    assert counts == plain_counts
    for got, want in zip(params, plain_params, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def _compiled_training_step(mistake: str = "", steps: int = 3) -> tuple[list[float], dict]:
    """The whole iteration inside one torch.compile'd function (zero_grad, forward under
    autocast, scale/backward, unscale_, clip, step, update): torch breaks the graph at its
    GradScaler, zero_grad and backward and runs them eagerly."""
    model, optimizer, scaler = _fresh_setup(torch.optim.AdamW)

    @torch.compile(backend="eager")
    def train_step(x: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(x).float().pow(2).mean()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if mistake == "bypass":
            optimizer.step()
        else:
            scaler.step(optimizer)
        scaler.update()
        return loss

    generator = torch.Generator().manual_seed(1)
    losses = [train_step(torch.randn(4, 8, generator=generator)).item() for _ in range(steps)]
    seen = _dynamo_counts()
    return losses, seen


def test_a_compiled_training_step_compiles_what_plain_torch_compiles() -> None:
    plain_losses, plain_counts = _compiled_training_step()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ar.checking(health=True) as seen:
            losses, counts = _compiled_training_step()
    assert seen.findings == []
    assert losses == plain_losses
    # The same graphs with the same operations, and the same breaks: amplint's
    # optimizer.step() pre-hook, called after the graph, breaks none in torch's wrapper.
    assert counts == plain_counts
    dynamo_warnings = [str(w.message) for w in caught if "Dynamo" in str(w.message)]
    assert dynamo_warnings == []


def test_dynamo_looks_at_no_frame_of_amplint_while_a_compiled_step_runs() -> None:
    """The stand-ins run eagerly, as torch's own classes do; the helpers they call are
    skipped as torch's files are, never traced or weighed as frames of the user's."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect()
    torch._logging.set_logs(dynamo=logging.DEBUG)
    logging.getLogger("torch._dynamo").addHandler(handler)
    try:
        with ar.checking(health=True):
            _compiled_training_step()
    finally:
        logging.getLogger("torch._dynamo").removeHandler(handler)
        torch._logging.set_logs()
    package = os.path.dirname(ar.__file__)
    assert any("start tracing" in message for message in messages)  # the log was read
    looked_at = [
        message
        for message in messages
        if package in message and ("start tracing" in message or "skipping" in message)
    ]
    assert looked_at == []


def test_a_mistake_inside_a_compiled_training_step_is_still_reported(quiet: None) -> None:
    with ar.checking() as seen:
        _compiled_training_step(mistake="bypass")
    assert codes(seen.findings) == ["AMP004"]


class PlainSGD(torch.optim.Optimizer):
    """An optimizer of the user's that Dynamo traces whole (torch's own break the graph)."""

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.add_(param.grad, alpha=-group["lr"])


def _step_traced_into_compiled_code() -> tuple[list[torch.Tensor], dict[str, int]]:
    """``optimizer.step()`` after ``unscale_`` (a bypass of the scaler) inlined into a
    compiled function."""
    model, _, scaler = _fresh_setup(torch.optim.SGD)
    optimizer = PlainSGD(model.parameters(), lr=0.01)

    @torch.compile(backend="eager")
    def apply() -> None:
        optimizer.step()

    generator = torch.Generator().manual_seed(4)
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(torch.randn(4, 8, generator=generator)).float().pow(2).mean()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        apply()
        scaler.update()
    return [p.detach().clone() for p in model.parameters()], _dynamo_counts()


def test_a_step_traced_into_a_graph_is_still_seen(quiet: None) -> None:
    """No graph break for amplint's optimizer.step() hook there either: Dynamo calls it
    after the graph."""
    plain_params, plain_counts = _step_traced_into_compiled_code()
    assert plain_counts["graph_breaks"] == 0
    with ar.checking() as seen:
        params, counts = _step_traced_into_compiled_code()
    assert codes(seen.findings) == ["AMP004"]
    assert counts == plain_counts
    for got, want in zip(params, plain_params, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def _train_with_compiled_function(amplint: str, steps: int = 6) -> tuple[list[float], dict]:
    """A compiled *function* that calls the model inside the user's autocast region: Dynamo
    traces the module calls themselves and guards on torch's global hook table. ``amplint``:
    "off", "compile_after" (``torch.compile`` called once installed, as under ``amplint
    run``) or "compile_before" (called before ``install()``; compiled at its first call).
    AMP105 measures one iteration in two here, so its hook would come and go."""
    model, optimizer, scaler = _fresh_setup(torch.optim.SGD)

    def compiled_loss() -> Any:
        return torch.compile(lambda x: model(x).float().pow(2).mean(), backend="eager")

    forward = compiled_loss() if amplint == "compile_before" else None
    checking = (
        ar.checking(health=True, activations_first=1, activations_every=2)
        if amplint != "off"
        else contextlib.nullcontext()
    )
    generator = torch.Generator().manual_seed(2)
    losses = []
    with checking:
        if forward is None:
            forward = compiled_loss()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = forward(torch.randn(4, 8, generator=generator))
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
    return losses, _dynamo_counts()


@pytest.mark.parametrize("amplint", ["compile_after", "compile_before"])
def test_a_compiled_function_gets_no_graph_from_amplint_measuring_some_iterations(
    amplint: str,
) -> None:
    plain_losses, plain_counts = _train_with_compiled_function("off")
    losses, counts = _train_with_compiled_function(amplint)
    assert losses == plain_losses
    assert counts == plain_counts


def test_dynamo_having_compiled_is_remembered_when_its_counters_are_cleared() -> None:
    """Code that clears Dynamo's counters after a warm-up (to count steady-state graphs)
    keeps the graphs compiled with amplint's hook in the table: none is added."""

    def run(with_amplint: bool) -> dict[str, int]:
        model, optimizer, scaler = _fresh_setup(torch.optim.SGD)
        forward = torch.compile(lambda x: model(x).float().pow(2).mean(), backend="eager")
        checking = (
            ar.checking(health=True, activations_first=2, activations_every=4)
            if with_amplint
            else contextlib.nullcontext()
        )
        with checking:
            for step in range(10):
                if step == 1:
                    torch._dynamo.utils.counters.clear()
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = forward(torch.randn(4, 8))
                optimizer.zero_grad()
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        return _dynamo_counts()

    assert run(with_amplint=True) == run(with_amplint=False)


def test_the_hook_keeps_its_place_ahead_of_a_users_later_hook_around_compiled_modules() -> None:
    """A global hook the user registered after amplint's clamps float16 outputs: amplint's
    measures them first, also after a compiled module took it out of the table and back."""

    torch._dynamo.reset()
    torch.manual_seed(0)
    with ar.checking("log", health=True) as seen:
        handle = torch.nn.modules.module.register_module_forward_hook(clamp_float16)
        try:
            backbone = torch.compile(nn.Linear(16, 32), backend="eager")
            head = nn.Sequential(nn.Linear(32, 4), Offset())
            params = [*backbone.parameters(), *head.parameters()]
            optimizer = torch.optim.SGD(params, lr=0.0)
            scaler = torch.amp.GradScaler("cpu")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torch's note on global hooks
                for _ in range(3):
                    with torch.autocast("cpu", dtype=torch.float16):
                        out = head(backbone(torch.randn(8, 16)))
                    loss = out.float().sub(30000).square().mean()
                    optimizer.zero_grad()
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
        finally:
            handle.remove()
        overflows = [f for f in seen.findings if f.code == "AMP105"]
    assert [f.first_step for f in overflows] == [0]


# The whole iteration compiled: Dynamo breaks the graph at the GradScaler, zero_grad and
# backward and in torch's optimizer wrapper, and compiles again for the bypass (a misuse
# amplint reports as AMP004). The last line printed is Dynamo's counters.
TRAIN_STEP_SCRIPT = textwrap.dedent(
    """
    import json
    import re

    import torch
    from torch import nn
    from torch._dynamo.utils import counters

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu")

    @torch.compile(backend="aot_eager")
    def train_step(x, y, bypass):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if bypass:
            optimizer.step()
        else:
            scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    generator = torch.Generator().manual_seed(1)
    for bypass in (False, False, False, True, True):
        x, y = torch.randn(6, 8, generator=generator), torch.randn(6, 1, generator=generator)
        print(train_step(x, y, bypass).item())
    found = {key: dict(value) for key, value in sorted(counters.items()) if value}
    print(re.sub("0x[0-9a-f]+", "0x", json.dumps(found, sort_keys=True)))
    """
)


def test_a_compiled_train_step_gets_plain_torchs_dynamo_counters_under_amplint_run(
    tmp_path: Path,
) -> None:
    """Every counter of Dynamo's (graphs, recompiles, frames, breaks and their reasons word
    for word) is plain torch's, in a fresh process each (Dynamo counts the frames it meets
    for the first time); amplint still sees the optimizer steps, and the bypass."""
    script = tmp_path / "train_step.py"
    script.write_text(TRAIN_STEP_SCRIPT, encoding="utf-8")
    commands = {
        "plain": [sys.executable, str(script)],
        "amplint": [sys.executable, "-m", "amplint.runtime.runner", str(script)],
    }
    running = {
        name: subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, command in commands.items()
    }
    try:
        done = {name: process.communicate(timeout=300) for name, process in running.items()}
    finally:
        for process in running.values():
            process.kill()  # a no-op for one that has exited
    for name, process in running.items():
        assert process.returncode == 0, done[name][1]
    *plain_losses, plain_counters = done["plain"][0].splitlines()
    *losses, counters = done["amplint"][0].splitlines()
    assert losses == plain_losses
    assert json.loads(counters)["stats"]["unique_graphs"] > 1  # the script compiled
    assert json.loads(counters) == json.loads(plain_counters)
    stderr = done["amplint"][1]
    assert set(re.findall(r"\bAMP\d{3}\b", stderr)) == {"AMP004"}, stderr
