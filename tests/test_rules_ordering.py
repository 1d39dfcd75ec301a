"""The scaler call-ordering rules (AMP004/005/006/011/016/018/019/021) against real torch.

The fixed training loops are executed on CPU (float16 autocast, ``GradScaler("cpu")``, a
tiny model, a few steps): each fix must give exactly the parameters of PyTorch's documented
recipe, and the crashes the rules predict must be the ones torch raises.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import libcst as cst
import pytest

from amplint.analysis.model import ModuleModel
from amplint.analysis.steps import Kind, iterations
from amplint.engine.run import fix_bytes, lint_bytes

torch = pytest.importorskip("torch")

CODES = {"AMP004", "AMP005", "AMP006", "AMP011", "AMP016", "AMP018", "AMP019", "AMP021"}
CORPUS = Path(__file__).parent / "fixtures" / "corpus" / "valid"

SETUP = """
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
batches = [(torch.randn(4, 8), torch.randn(4, 1)) for _ in range(6)]
accum = 2
"""


def _run(body: str, init_scale: float = 2.0**10) -> list:
    namespace: dict = {"init_scale": init_scale}
    exec(compile(SETUP + textwrap.dedent(body), "<loop>", "exec"), namespace)
    return [p.detach().clone() for p in namespace["model"].parameters()]


def _fixed(body: str, code: str, unsafe: bool = False) -> str:
    source = SETUP + textwrap.dedent(body)
    assert {f.code for f in lint_bytes(source.encode(), "loop.py", CODES).findings} == {code}
    result = fix_bytes(source.encode(), "loop.py", {code}, unsafe=unsafe)
    assert result.data is not None
    text = result.data.decode()
    assert text.startswith(SETUP)
    return text[len(SETUP) :]


def _same(a: list, b: list) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


CLIP = (
    "    scaler.unscale_(optimizer)\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)\n"
)
RECIPE = """
for x, y in batches:
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    scaler.step(optimizer)
    scaler.update()
"""


def test_amp006_fix_is_pytorchs_clipping_recipe() -> None:
    buggy = RECIPE.replace("    scaler.unscale_(optimizer)\n", "")
    fixed = _fixed(buggy, "AMP006")
    assert fixed == RECIPE
    assert _same(_run(fixed), _run(RECIPE))
    # The bug is not harmless: clipping the scaled gradients gives other weights.
    assert not _same(_run(buggy), _run(RECIPE))


def test_amp004_fix_steps_through_the_scaler() -> None:
    recipe = RECIPE.replace("    scaler.unscale_(optimizer)\n", "").replace(
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)\n", ""
    )
    buggy = recipe.replace("scaler.step(optimizer)\n    scaler.update()", "optimizer.step()")
    fixed = _fixed(buggy, "AMP004")
    assert fixed == recipe
    assert _same(_run(fixed), _run(recipe))
    assert not _same(_run(buggy), _run(recipe))


def test_amp005_fix_scales_the_loss() -> None:
    recipe = RECIPE
    buggy = recipe.replace("scaler.scale(loss).backward()", "loss.backward()").replace(
        CLIP,
        "",
    )
    fixed = _fixed(buggy, "AMP005")
    expected = recipe.replace(
        CLIP,
        "",
    )
    assert fixed == expected
    assert _same(_run(fixed), _run(expected))
    # With no scale() call at all, torch refuses the step.
    with pytest.raises(AssertionError, match=r"scaler\.scale"):
        _run(buggy)


def test_amp005_mixed_unscaled_loss_is_divided_by_the_scale() -> None:
    recipe = RECIPE.replace(
        "scaler.scale(loss).backward()",
        "scaler.scale(loss).backward(retain_graph=True)\n    scaler.scale(loss).backward()",
    )
    buggy = recipe.replace("    scaler.scale(loss).backward()\n", "    loss.backward()\n")
    fixed = _fixed(buggy, "AMP005")
    assert fixed == recipe
    assert _same(_run(fixed), _run(recipe))
    assert not _same(_run(buggy), _run(recipe))


def test_amp011_torch_raises_and_the_fix_runs() -> None:
    buggy = RECIPE.replace(
        "    scaler.step(optimizer)\n",
        "    scaler.unscale_(optimizer)\n    scaler.step(optimizer)\n",
    )
    with pytest.raises(RuntimeError, match="unscale_"):
        _run(buggy)
    fixed = _fixed(buggy, "AMP011")
    assert fixed == RECIPE
    assert _same(_run(fixed), _run(RECIPE))


def test_amp011_unscale_after_step_raises_and_the_fix_runs() -> None:
    buggy = RECIPE.replace(
        "    scaler.update()\n", "    scaler.unscale_(optimizer)\n    scaler.update()\n"
    )
    with pytest.raises(RuntimeError, match="after step"):
        _run(buggy)
    assert _same(_run(_fixed(buggy, "AMP011")), _run(RECIPE))


ACCUMULATION = """
for i, (x, y) in enumerate(batches):
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nn.functional.mse_loss(model(x).float(), y) / accum
    scaler.scale(loss).backward()
    if (i + 1) % accum == 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
"""


def test_amp016_fix_is_pytorchs_accumulation_recipe() -> None:
    buggy = ACCUMULATION.replace(
        """    if (i + 1) % accum == 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        scaler.step(optimizer)
        scaler.update()
""",
        """    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    scaler.step(optimizer)
    scaler.update()
    if (i + 1) % accum == 0:
""",
    )
    assert _fixed(buggy, "AMP016", unsafe=True) == ACCUMULATION
    assert fix_bytes((SETUP + buggy).encode(), "loop.py", {"AMP016"}).data is None  # unsafe
    assert _same(_run(_fixed(buggy, "AMP016", unsafe=True)), _run(ACCUMULATION))
    assert not _same(_run(buggy), _run(ACCUMULATION))


def test_amp018_overflow_crashes_and_the_fix_skips_the_step() -> None:
    buggy = RECIPE.replace("0.1)", "0.1, error_if_nonfinite=True)")
    huge = 2.0**127  # float32 gradients overflow: the scaler's routine first steps
    with pytest.raises(RuntimeError, match="non-finite"):
        _run(buggy, init_scale=huge)
    fixed = _fixed(buggy, "AMP018")
    assert fixed == RECIPE
    assert _same(_run(fixed, init_scale=huge), _run(RECIPE, init_scale=huge))


def test_amp019_gradscaler_rejects_closures() -> None:
    source = SETUP + textwrap.dedent(
        """
        x, y = batches[0]
        def closure():
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            return loss
        closure()
        scaler.step(optimizer, closure=closure)
        """
    )
    assert [f.code for f in lint_bytes(source.encode(), "loop.py", CODES).findings] == ["AMP019"]
    with pytest.raises(RuntimeError, match=r"[Cc]losure"):
        exec(compile(source, "<loop>", "exec"), {"init_scale": 2.0})


def test_amp021_every_n_steps_is_quiet() -> None:
    every = RECIPE.replace("for x, y in", "for step, (x, y) in enumerate(").replace(
        "batches:", "batches):"
    )
    noisy = every + '    print(f"scale {scaler.get_scale()}")\n'
    quiet = every + '    if step % 100 == 0:\n        print(f"scale {scaler.get_scale()}")\n'
    # The CPU scaler keeps its scale on the host: reading it every step costs nothing.
    assert lint_bytes((SETUP + noisy).encode(), "l.py", CODES).findings == []
    on_cuda = (SETUP + noisy).replace('GradScaler("cpu", ', 'GradScaler("cuda", ')
    assert [f.code for f in lint_bytes(on_cuda.encode(), "l.py", CODES).findings] == ["AMP021"]
    assert lint_bytes((SETUP + quiet).encode(), "l.py", CODES).findings == []
    _run(quiet)


# -- the shared analysis ------------------------------------------------------------------------


def _iteration(source: str):
    source = textwrap.dedent(source)
    model = ModuleModel(cst.parse_module(source), source)
    return model, iterations(model)


def test_events_follow_helpers_and_rename_parameters() -> None:
    _, found = _iteration(
        """
        import torch
        scaler = torch.amp.GradScaler()
        def clip(s, opt):
            s.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        for i, batch in enumerate(loader):
            scaler.scale(loss).backward()
            if (i + 1) % accum == 0:
                clip(scaler, optimizer)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
        """
    )
    loop = next(it for it in found if isinstance(it.root, cst.For))
    kinds = [e.kind for e in loop.events]
    assert kinds == [
        Kind.SCALED_BACKWARD,
        Kind.UNSCALE,
        Kind.CLIP,
        Kind.SCALER_STEP,
        Kind.UPDATE,
        Kind.ZERO_GRAD,
    ]
    unscale = loop.events[1]
    assert (unscale.scaler, unscale.optimizer) == ("scaler", "optimizer")
    assert (unscale.scaler_local, unscale.optimizer_local) == ("s", "opt")
    assert {c.key for c in unscale.conditions} == {"(i + 1) % accum == 0"}


def test_conditions_recognise_the_two_sides_of_one_test() -> None:
    from amplint.analysis.steps import exclusive

    _, found = _iteration(
        """
        def train(scaler=None):
            for batch in loader:
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
                if not scaler:
                    optimizer.step()
        """
    )
    events = found[0].events
    scaled, plain, step = events
    assert exclusive(scaled, plain) and exclusive(scaled, step) and not exclusive(plain, step)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.py")), ids=lambda p: p.name)
def test_valid_corpus_has_no_ordering_finding(path: Path) -> None:
    assert lint_bytes(path.read_bytes(), path.name, CODES).findings == []
