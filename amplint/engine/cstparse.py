"""libcst's ``parse_module``, minus re-validating every node its own parser just made.

Each libcst node checks its fields when constructed (``CSTNode.__post_init__`` calls
``_validate``: whitespace regexes, parenthesis balance...). For a tree the native parser
builds from source those checks cannot fail, yet they are a fifth of the parse time (torch's
``_dynamo/variables/builder.py``: 0.34 s of 1.65 s, profiled). libcst's own comment on
``__post_init__`` says as much ("avoid validating the tree when parsing a file").

Validation is switched off only while :func:`parse_module` runs, and back on after it, for
every thread: nodes that rules and fixes build are validated as always. Outside the window
a missing ``__post_init__`` (a libcst that moved it) means plain ``libcst.parse_module``.
"""

from __future__ import annotations

import threading

import libcst as cst

_lock = threading.Lock()
_parsing = 0
_validate = cst.CSTNode.__dict__.get("__post_init__")


def _skip(self: cst.CSTNode) -> None:
    return None


def parse_module(source: str | bytes) -> cst.Module:
    """``libcst.parse_module(source)``: the same tree, without the constructors' checks."""
    global _parsing
    if _validate is None:
        return cst.parse_module(source)
    with _lock:
        _parsing += 1
        cst.CSTNode.__post_init__ = _skip  # type: ignore[method-assign]
    try:
        return cst.parse_module(source)
    finally:
        with _lock:
            _parsing -= 1
            if _parsing == 0:
                cst.CSTNode.__post_init__ = _validate  # type: ignore[method-assign]
