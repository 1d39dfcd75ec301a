"""The instrumented classes are drop-ins: same signatures, numerics, errors and checkpoints."""

from __future__ import annotations

import copy
import inspect
import pickle
import warnings

import amplint.runtime as ar
import pytest
import torch
from runtime_helpers import batches, loss_of, tiny_model

# The deprecated stand-ins and wrong arguments are exercised on purpose here.
pytestmark = pytest.mark.filterwarnings(
    "ignore::amplint.runtime.findings.AmpWarning", "ignore::FutureWarning"
)

TorchGradScaler = torch.amp.GradScaler
TorchAutocast = torch.amp.autocast


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (ar.GradScaler, TorchGradScaler),
        (ar.autocast, TorchAutocast),
        (ar.CudaGradScaler, torch.cuda.amp.GradScaler),
        (ar.CpuGradScaler, torch.cpu.amp.GradScaler),
        (ar.cuda_autocast, torch.cuda.amp.autocast),
        (ar.cpu_autocast, torch.cpu.amp.autocast),
    ],
)
def test_constructor_signatures_match(ours: type, theirs: type) -> None:
    assert _shape(inspect.signature(ours)) == _shape(inspect.signature(theirs))


def _shape(signature: inspect.Signature) -> list[tuple[str, object, object]]:
    # Annotations are compared as names only: ours are strings (postponed evaluation).
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize(
    "method", ["scale", "unscale_", "step", "update", "state_dict", "load_state_dict"]
)
def test_method_signatures_match(method: str) -> None:
    ours = inspect.signature(getattr(ar.GradScaler, method))
    theirs = inspect.signature(getattr(TorchGradScaler, method))
    assert _shape(ours) == _shape(theirs)


def test_is_a_torch_gradscaler_and_autocast() -> None:
    assert issubclass(ar.GradScaler, TorchGradScaler)
    assert issubclass(ar.autocast, TorchAutocast)
    assert isinstance(ar.CudaGradScaler(enabled=False), TorchGradScaler)


def _train(scaler_cls: type, autocast_cls: type, *, steps: int, inf_at: set[int]) -> tuple:
    model = tiny_model(3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    scaler = scaler_cls("cpu", init_scale=2.0**10, growth_interval=2)
    for i, (x, y) in enumerate(batches(steps, seed=5)):
        opt.zero_grad()
        with autocast_cls("cpu", dtype=torch.float16):
            loss = loss_of(model, x, y)
        scaler.scale(loss).backward()
        if i in inf_at:
            model[0].weight.grad[0, 0] = float("inf")
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        scaler.step(opt)
        scaler.update()
    return [p.detach().clone() for p in model.parameters()], scaler.state_dict()


def test_bit_identical_to_torch_including_skipped_steps() -> None:
    reference, torch_state = _train(TorchGradScaler, TorchAutocast, steps=6, inf_at={1, 4})
    with ar.checking("raise"):
        ours, our_state = _train(ar.GradScaler, ar.autocast, steps=6, inf_at={1, 4})
    assert our_state == torch_state
    assert torch_state["scale"] == 2.0**10 / 4 * 2  # two backoffs, one growth
    for a, b in zip(reference, ours, strict=True):
        assert torch.equal(a, b)


def test_state_dict_interchange_both_directions() -> None:
    ours = ar.GradScaler("cpu", init_scale=8.0, growth_factor=3.0, growth_interval=7)
    theirs = TorchGradScaler("cpu", init_scale=2.0, backoff_factor=0.25)
    _, trained = _train(ar.GradScaler, ar.autocast, steps=3, inf_at={0})
    ours.load_state_dict(trained)
    assert ours.state_dict() == trained
    theirs.load_state_dict(ours.state_dict())
    assert theirs.state_dict() == trained
    fresh = ar.GradScaler("cpu")
    fresh.load_state_dict(TorchGradScaler("cpu", init_scale=5.0).state_dict())
    assert fresh.state_dict() == TorchGradScaler("cpu", init_scale=5.0).state_dict()
    assert list(fresh.state_dict()) == list(TorchGradScaler("cpu").state_dict())
    assert ar.GradScaler("cpu", enabled=False).state_dict() == {}


def test_pickle_and_deepcopy_at_iteration_boundary() -> None:
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = ar.GradScaler("cpu", init_scale=4.0)
    for x, y in batches(2):
        opt.zero_grad()
        scaler.scale(loss_of(model, x, y)).backward()
        scaler.step(opt)
        scaler.update()
        scaler = pickle.loads(pickle.dumps(scaler))
    assert type(scaler) is ar.GradScaler
    assert scaler.get_scale() == copy.deepcopy(scaler).get_scale() == 4.0
    with pytest.raises(AssertionError, match="pickled"):
        scaler.scale(loss_of(model, *batches(1)[0])).backward()
        scaler.step(opt)
        pickle.dumps(scaler)


def test_torch_errors_still_raised() -> None:
    with pytest.raises(AssertionError, match="growth factor"):
        ar.GradScaler("cpu", growth_factor=1.0)
    with pytest.raises(ValueError, match="device_type"):
        ar.autocast(device_type=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ar.autocast()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="requires a callable"):
        ar.autocast("cpu")(3)  # type: ignore[arg-type]
    scaler = ar.GradScaler("cpu")
    opt = torch.optim.SGD(tiny_model().parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="Closure"):
        scaler.step(opt, closure=lambda: 0.0)
    with pytest.raises(AssertionError, match="_scale is None"):
        scaler.update()


def test_autocast_behaves_as_torchs() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with ar.autocast("cpu", dtype=torch.float16) as region:
        assert isinstance(region, ar.autocast)
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") is torch.float16
        assert (a @ b).dtype is torch.float16
        with ar.autocast("cpu", enabled=False):
            assert (a @ b).dtype is torch.float32
    assert not torch.is_autocast_enabled("cpu")
    with TorchAutocast("cpu"):
        reference = a @ b
    with ar.autocast("cpu"):
        assert torch.equal(a @ b, reference)

    @ar.autocast("cpu", dtype=torch.bfloat16)
    def matmul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x @ y

    assert matmul(a, b).dtype is torch.bfloat16
    assert matmul.__name__ == "matmul"


def test_legacy_constructors_map_onto_torch_amp() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scaler = ar.CpuGradScaler(init_scale=16.0)
        region = ar.cpu_autocast()
        cuda_scaler = ar.CudaGradScaler()
    assert scaler._device == "cpu" and scaler.get_scale() == 16.0
    assert region.device == "cpu" and region.fast_dtype is torch.bfloat16
    assert cuda_scaler._device == "cuda"
    assert cuda_scaler.is_enabled() == torch.cuda.is_available()
