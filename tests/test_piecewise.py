"""Large files parsed in pieces give exactly the tree a whole parse gives, with bounded pieces."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libcst as cst
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amplint.catalog import known_codes
from amplint.engine import piecewise
from amplint.engine.piecewise import parse_piecewise, plan_cuts
from amplint.engine.run import lint_bytes
from amplint.engine.source import SourceError, parse

CORPUS = Path(__file__).resolve().parent / "fixtures" / "corpus"

# Where comments and blank lines go is what a piece boundary can get wrong: libcst gives
# those after a block to the block's footer when indented deeper than the next statement,
# to that statement otherwise.
LAYOUT = '''\
#!/usr/bin/env python
# header comment

"""Module docstring."""
import torch


class Trainer:
    """Doc."""

    scale = 1
    # a comment at member level

    @staticmethod
    # between decorator and def
    def build():
        return 1
        # deeper trailing comment

    # member-level comment
        # odd deeper comment
# column-zero comment inside the class
    def step(self):
        if True:
            pass
            # deep
    async def fetch(self):
        await self.step()

        # trailing deep

    class Inner:
        def a(self):
            pass
        # inner-level trailing

        def b(self): return 2
        def c(self):
            text = """
not indented
  inside a string"""
            return text
    # end of Trainer


def top():
    def nested():
        pass
    # x
    return nested
# end-of-file comment

'''

SOURCES = {
    "layout": LAYOUT,
    "tabs, no final newline": "class B:\n\tdef f(self):\n\t\tpass\n\n\tdef g(self):\n\t\treturn 1",
    "crlf": "class C:\r\n    def f(self):\r\n        pass\r\n\r\n    def g(self):\r\n"
    "        return 1\r\n# c\r\n\r\nx = 1\r\n",
    "first indent after top-level code": "x = 1\ny = 2\nif x:\n  w = 1\nclass D:\n  a = 1\n"
    "  b = 2\n  def f(self):\n      return 1\n  c = 3\n",
    "trailing blank lines and comments": "import os\ndef f():\n    a = 1\n\n\n\n    b = 2\n\n\n"
    "    # c\n\n\n",
    "line separators in strings": 'class A:\n    s = "a\u2028b\x0bc\x1cd"\n    def f(self):\n'
    "        return 1\n\n    t = 2\n",
    "if, with, for and while bodies": "import torch\nif torch.cuda.is_available():\n"
    "    def a():\n        pass\n\n    x = 1\n    # c\nwith torch.autocast('cuda'):\n"
    "    y = 2\n\n    z = 3\n        # deep\nfor i in range(3):\n    w = i\n    v = w\n"
    "while running:\n    step()\n    check()\nif flag:\n    a = 1\n    b = 2\nelse:\n"
    "    c = 3\n    d = 4\n",
    "nested classes end together": "class A:\n    class B:\n        x = 1\n        y = 2\n"
    "            # deep\n        # b-level\n    # a-level\n# top\nz = 3\n",
}


def _whole(text: str) -> cst.Module:
    return cst.parse_module(text)


@pytest.mark.parametrize("name", SOURCES)
def test_every_possible_piece_boundary_gives_the_whole_tree(name: str) -> None:
    text = SOURCES[name]
    pieced = parse_piecewise(text, piece_chars=1)  # a piece at every place one can start
    assert pieced is not None
    assert pieced.deep_equals(_whole(text))
    assert pieced.code == text


@pytest.mark.parametrize("path", sorted(CORPUS.rglob("*.py")), ids=lambda p: p.name)
def test_corpus_files_in_pieces_equal_whole_parses(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    pieced = parse_piecewise(text, piece_chars=1)
    if pieced is not None:  # files of one statement have nowhere to cut
        assert pieced.deep_equals(_whole(text))


def _large_module(classes: int = 3, methods: int = 400) -> str:
    """A module well above the piecewise threshold, shaped like torch's distributed tests
    (large classes of small methods inside an outer class), with AMP mistakes at the end."""
    parts = ["import torch\n", "from torch.cuda.amp import autocast\n\n"]
    for c in range(classes):
        parts.append(f"\nclass Suite{c}:\n    class Base:\n        # members of suite {c}\n")
        for m in range(methods):
            parts.append(
                f"\n        def test_{m}(self, model, x):\n"
                f'            """Case {m}: a docstring\n            long enough to matter."""\n'
                f"            out = model(x) * {m}  # scale\n"
                f"            return out.sum()\n"
            )
    parts.append(
        "\n        def test_amp(self, model, optimizer, x):\n"
        "            with autocast():\n"
        "                loss = model(x).sum()\n"
        "                loss.backward()\n"
        "            optimizer.step()\n"
    )
    return "".join(parts)


@contextmanager
def _parse_sizes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The size of every text handed to ``libcst.parse_module`` inside the block."""
    sizes: list[int] = []
    real_parse = cst.parse_module

    def recording_parse(code: str | bytes, *args: object, **kwargs: object) -> cst.Module:
        sizes.append(len(code))
        return real_parse(code, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cst, "parse_module", recording_parse)
    try:
        yield sizes
    finally:
        monkeypatch.undo()


def test_large_files_are_parsed_in_bounded_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _large_module()
    assert len(text) > piecewise.PIECEWISE_ABOVE
    with _parse_sizes(monkeypatch) as sizes:
        parsed = parse(text.encode())

    assert len(sizes) > 3, "the file was not cut"
    # A piece is its share of the text plus a few stand-in lines.
    assert max(sizes) <= piecewise.PIECE_CHARS + 2_000
    assert parsed.module.deep_equals(_whole(text))
    assert parsed.text == text


def test_findings_on_a_large_file_equal_a_whole_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _large_module().encode()
    pieced = lint_bytes(data, "suite.py", known_codes())
    monkeypatch.setattr(piecewise, "PIECEWISE_ABOVE", 10**12)
    whole = lint_bytes(data, "suite.py", known_codes())
    assert {f.code for f in pieced.findings} >= {"AMP001", "AMP007"}
    assert pieced.findings == whole.findings


def test_a_coding_cookie_is_kept() -> None:
    text = "# -*- coding: latin-1 -*-\n" + _large_module() + "name = 'caf\xe9'\n"
    data = text.encode("latin-1")
    module = piecewise.parse_large(data)
    assert module is not None
    whole = cst.parse_module(data)
    assert module.encoding == whole.encoding
    assert module.deep_equals(whole)
    assert module.bytes == data


def test_a_syntax_error_in_a_large_file_is_reported_as_by_a_whole_parse() -> None:
    text = _large_module() + "\ndef broken(:\n    pass\n"
    with pytest.raises(SourceError) as raised:
        parse(text.encode())
    with pytest.raises(cst.ParserSyntaxError) as expected:
        cst.parse_module(text)
    assert raised.value.position.row == expected.value.raw_line


@pytest.mark.parametrize(
    "text",
    [
        "class A:\n    x = 1\n\x0c\n    y = 2\n",  # form feed: indentation rules differ
        "class A:\r    x = 1\r    y = 2\r",  # old Mac line ends
        "x = 1\n",  # nothing to cut
    ],
)
def test_texts_it_does_not_handle_are_left_to_a_whole_parse(text: str) -> None:
    assert parse_piecewise(text, piece_chars=1) is None


_HEADERS = [
    "class K:",
    "def f(self):",
    "async def g():",
    "if flag:",
    "for item in items:",
    "while running:",
    "with torch.autocast('cuda'):",
    "try:",
]
#: The clause that may follow a header's block (a piece never starts inside such a body).
_CLAUSES = {"if flag:": "else:", "for item in items:": "else:", "try:": "finally:"}
_INDENTS = st.sampled_from([" ", "  ", "   ", "    ", "\t"])
_SIMPLE = st.sampled_from(
    ["x = 1", "call(a, b)", "return value", "pass", "y = [\n1,\n  2]", 's = """a\n b\nc"""']
)


@st.composite
def _lines_between(draw: st.DrawFn, indent: str) -> list[str]:
    """Blank lines and comments at assorted indentation."""
    lines = []
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["blank", "here", "deeper", "left"]))
        if kind == "blank":
            lines.append("")
        elif kind == "here":
            lines.append(f"{indent}# here")
        elif kind == "deeper":
            lines.append(f"{indent}    # deeper")
        else:
            lines.append("# left")
    return lines


@st.composite
def _block(draw: st.DrawFn, indent: str, depth: int) -> list[str]:
    lines: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        lines.extend(draw(_lines_between(indent)))
        if depth < 3 and draw(st.booleans()):
            unit = draw(_INDENTS)
            if "\t" in indent + unit and " " in indent + unit:
                unit = "\t" if "\t" in indent else "    "
            header = draw(st.sampled_from(_HEADERS))
            if header.startswith(("class", "def", "async def")) and draw(st.booleans()):
                lines.append(f"{indent}@decorator")
            lines.append(indent + header)
            lines.extend(draw(_block(indent + unit, depth + 1)))
            clause = _CLAUSES.get(header)
            if clause is not None and (header == "try:" or draw(st.booleans())):
                lines.extend(draw(_lines_between(indent)))
                lines.append(indent + clause)
                lines.extend(draw(_block(indent + unit, depth + 1)))
        else:
            statement = draw(_SIMPLE)
            lines.append(indent + statement.replace("\n", "\n" + indent))
    return lines


@st.composite
def _modules(draw: st.DrawFn) -> str:
    text = "\n".join(draw(_block("", 0)))
    return text + draw(st.sampled_from(["\n", "", "\n\n# tail\n"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_modules(), st.integers(1, 80))
def test_any_layout_in_pieces_equals_the_whole_parse(text: str, piece_chars: int) -> None:
    try:
        whole = _whole(text)
    except cst.ParserSyntaxError:
        return  # the generator can mix tabs and spaces in ways Python refuses
    pieced = parse_piecewise(text, piece_chars=piece_chars)
    if pieced is not None:
        assert pieced.deep_equals(whole)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_modules(), st.integers(1, 80))
def test_cuts_planned_before_the_tree_goes_equal_those_read_from_it(
    text: str, piece_chars: int
) -> None:
    """A large file's CPython tree is dropped before libcst parses it; the places to cut,
    read from the tree first and from the bytes' lines, must be those the tree gives."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return
    planned = parse_piecewise(text, piece_chars, plan_cuts(tree, text.encode()))
    from_tree = parse_piecewise(text, piece_chars, tree)
    assert (planned is None) == (from_tree is None)
    if planned is not None and from_tree is not None:
        assert planned.deep_equals(from_tree)
        assert planned.code == text


def test_an_edit_inside_a_large_class_is_reparsed_in_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The language server re-parses only the statements an edit touched; when that is a
    class of thousands of lines, it too goes in pieces, and the result is a full parse's."""
    before = _large_module().encode()
    first = lint_bytes(before, "suite.py", known_codes(), fixes=False)
    after = before.replace(b"out = model(x) * 7  #", b"out = model(x) * 77  #", 1)
    with _parse_sizes(monkeypatch) as sizes:
        edited = lint_bytes(after, "suite.py", known_codes(), fixes=False, previous=first)

    assert sizes and max(sizes) <= piecewise.PIECE_CHARS + 2_000
    assert sum(sizes) < 0.8 * len(after), "the whole file was parsed again"
    assert edited.parsed is not None
    assert edited.parsed.module.deep_equals(cst.parse_module(after))
    assert edited.findings == lint_bytes(after, "suite.py", known_codes(), fixes=False).findings
