"""How the runtime tells framework code from the user's, without any framework installed.

A folder registered as a framework package holds real Python files that drive a real
GradScaler and a real autocast, as Accelerate's and Lightning's code do.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import amplint.runtime as ar
import pytest
import torch
from amplint.runtime import frames, frameworks

FRAMEWORK_CODE = textwrap.dedent(
    """\
    import torch

    def step(scaler, optimizer, loss):
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    def run_hook(hook):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hook()
    """
)


@pytest.fixture
def fake_framework(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A module living in a folder the runtime takes for Accelerate's."""
    folder = tmp_path / "fakeframework"
    folder.mkdir()
    (folder / "loop.py").write_text(FRAMEWORK_CODE)
    spec = importlib.util.spec_from_file_location("fakeframework_loop", folder / "loop.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(frameworks, "_dirs", {str(folder) + os.sep: "accelerate"})
    monkeypatch.setattr(frames, "_SKIPPED_PREFIXES", frames._SKIPPED_PREFIXES)
    yield module
    sys.modules.pop("fakeframework_loop", None)


def test_half_params_under_a_framework_scaler_name_its_remedy_and_the_users_line(
    fake_framework: ModuleType,
) -> None:
    ar.install(mode="log")
    model = torch.nn.Linear(4, 1).half()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    loss = model(torch.randn(2, 4, dtype=torch.float16)).float().sum()
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        fake_framework.step(scaler, optimizer, loss)  # the user's line
    line = sys._getframe().f_lineno - 1
    [finding] = [f for f in ar.report() if f.code in ("AMP009", "AMP022")]
    assert (finding.code, Path(finding.filename).name, finding.line) == (
        "AMP022",
        Path(__file__).name,
        line,
    )
    assert "Accelerate's float16 mixed precision" in finding.message
    assert "accelerator.prepare" in finding.message


def test_half_params_with_the_users_own_scaler_stay_amp009(fake_framework: ModuleType) -> None:
    ar.install(mode="log")
    model = torch.nn.Linear(4, 1).half()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(model(torch.randn(2, 4, dtype=torch.float16)).float().sum()).backward()
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        scaler.step(optimizer)
    assert [f.code for f in ar.report()] == ["AMP009"]


def test_a_region_the_framework_enters_around_user_code_is_not_the_users(
    fake_framework: ModuleType,
) -> None:
    """Lightning's `training_step` shape: the framework enters autocast, then calls back the
    user's code, which runs backward; only the user's own region is the user's to fix."""
    ar.install(mode="log")
    model = torch.nn.Linear(4, 1)

    def training_step() -> None:
        model(torch.randn(2, 4)).sum().backward()

    def training_step_own_region() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(torch.randn(2, 4)).sum().backward()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fake_framework.run_hook(training_step)
        assert ar.report() == []
        fake_framework.run_hook(training_step_own_region)
    assert [f.code for f in ar.report()] == ["AMP001"]
    assert ar.report()[0].line == training_step_own_region.__code__.co_firstlineno + 2


LIBRARY_SCALER = textwrap.dedent(
    """\
    class NativeScaler:
        def __init__(self, scaler):
            self.scaler = scaler

        def __call__(self, loss, optimizer):
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
    """
)


def _installed_library(tmp_path: Path, name: str) -> ModuleType:
    """A module in a ``site-packages`` folder: code the user installed, not wrote."""
    folder = tmp_path / "lib" / "python3" / "site-packages"
    folder.mkdir(parents=True)
    (folder / f"{name}.py").write_text(LIBRARY_SCALER)
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_finding_inside_an_installed_helper_names_the_users_call(tmp_path: Path) -> None:
    # timm's NativeScaler runs the backward for DeiT's loop: called inside autocast, the
    # line to move is the user's call, not timm's backward.
    library = _installed_library(tmp_path, "scalerlib")
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with ar.checking("log"):
        loss_scaler = library.NativeScaler(torch.amp.GradScaler("cpu"))
        for _ in range(2):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = model(torch.randn(2, 4)).float().sum()
                loss_scaler(loss, optimizer)
                line = sys._getframe().f_lineno - 1
        (finding,) = [f for f in ar.report() if f.code == "AMP001"]
    assert (finding.filename, finding.line) == (__file__, line)


def test_a_package_installed_without_editable_mode_and_run_with_m_names_its_own_line(
    tmp_path: Path,
) -> None:
    # `amplint run -m mypkg.train` on a package in site-packages: above its frames there is
    # only runpy, never the user's line.
    import runpy

    folder = tmp_path / "lib" / "python3" / "site-packages" / "installed_pkg"
    folder.mkdir(parents=True)
    module = folder / "train.py"
    module.write_text(
        "from amplint.runtime import frames\nSITE = frames.user_site(0)\n", encoding="utf-8"
    )
    result = runpy.run_path(str(module))
    assert result["SITE"] == (str(module), 2)
