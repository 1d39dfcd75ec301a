"""Parsing without node validation gives libcst's own tree, and validation comes back."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest

from amplint.engine.cstparse import parse_module

CORPUS = Path(__file__).resolve().parent / "fixtures" / "corpus"


def _validation_is_on() -> bool:
    try:
        cst.Name("not a name")
    except cst.CSTValidationError:
        return True
    return False


def test_same_tree_as_libcst_on_the_corpus() -> None:
    paths = sorted(CORPUS.rglob("*.py"))
    assert paths
    for path in paths:
        data = path.read_bytes()
        tree = parse_module(data)
        assert tree.deep_equals(cst.parse_module(data)), path
        assert tree.bytes == data, path
    assert _validation_is_on()


def test_validation_is_back_after_a_syntax_error() -> None:
    with pytest.raises(cst.ParserSyntaxError):
        parse_module("def broken(:\n")
    assert _validation_is_on()
