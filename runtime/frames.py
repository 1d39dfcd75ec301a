"""Find the user's call site: the first stack frame outside amplint and torch."""

from __future__ import annotations

import contextlib
import os
import sys
from types import FrameType

import torch

__all__ = ["Site", "forward_site", "user_frame", "user_site"]

Site = tuple[str, int]

# Frames in these folders are the machinery between the user's line and the check: the
# instrumented classes and hooks here, torch's autocast decorator, Tensor.backward,
# Optimizer's step wrapper. A finding must name the line the user wrote.
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_SKIPPED_PREFIXES: tuple[str, ...] = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    _TORCH_DIR + os.sep,
    os.path.join(os.path.dirname(_TORCH_DIR), "functorch") + os.sep,
)
# contextlib's frames sit between a `with` statement and a generator-based context manager.
_SKIPPED_FILES: frozenset[str] = frozenset({os.path.abspath(contextlib.__file__)})


def _skipped(filename: str) -> bool:
    return filename.startswith(_SKIPPED_PREFIXES) or filename in _SKIPPED_FILES


# Installed libraries: a helper such as timm's NativeScaler runs the backward, the step and
# the clip for the user's loop, and its lines are not the user's to edit. The user's call
# of it is named; a library frame only when no other is on the stack.
_LIBRARY_MARKERS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def _library(filename: str) -> bool:
    return any(marker in filename for marker in _LIBRARY_MARKERS)


# The interpreter's own modules: above an installed package's frames there is only the
# machinery that started it (runpy for ``-m``), never the user's line.
_STDLIB = os.path.dirname(os.path.abspath(contextlib.__file__)) + os.sep


def _interpreter(filename: str) -> bool:
    return filename.startswith("<") or filename.startswith(_STDLIB)


def user_frame(depth: int = 1) -> FrameType | None:
    """The innermost frame, starting ``depth`` frames up, that is neither amplint's nor
    torch's nor an installed library's; failing that (a package installed without ``-e``
    and run with ``-m``), the innermost library frame."""
    return _user_frame_from(sys._getframe(depth))


def user_site(depth: int = 1) -> Site:
    """``(filename, line)`` of the user's call; ``("<unknown>", 0)`` if there is none."""
    frame = user_frame(depth + 1)
    if frame is None:
        return ("<unknown>", 0)
    return (frame.f_code.co_filename, frame.f_lineno)


_MODULE_CALLS = frozenset(
    {torch.nn.Module._call_impl.__code__, torch.nn.Module._wrapped_call_impl.__code__}
)


def forward_site() -> Site:
    """The user's line that called the outermost module now running (``model(x)``, or
    ``self.model(x)`` in a training step): where a finding about the forward points. The
    innermost user line when no module call is on the stack."""
    frame: FrameType | None = sys._getframe(1)
    outermost: FrameType | None = None
    while frame is not None:
        if frame.f_code in _MODULE_CALLS:
            outermost = frame
        frame = frame.f_back
    if outermost is None or outermost.f_back is None:
        return user_site(2)
    caller = _user_frame_from(outermost.f_back)
    if caller is None:
        return user_site(2)
    return (caller.f_code.co_filename, caller.f_lineno)


def _user_frame_from(frame: FrameType | None) -> FrameType | None:
    library: FrameType | None = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _skipped(filename):
            if not _library(filename):
                if library is not None and _interpreter(filename):
                    return library
                return frame
            if library is None:
                library = frame
        frame = frame.f_back
    return library
