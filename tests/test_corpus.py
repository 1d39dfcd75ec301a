"""A corpus of realistic training scripts, checked end to end.

Every file under ``tests/fixtures/corpus`` is a self-contained training script (never run).
Files under ``valid/`` are correct AMP code and must get no finding at all; files under
``invalid/`` mark each expected finding with a trailing ``# expect: AMP001`` comment (several
codes: ``# expect: AMP001, AMP002``) on the line where amplint must report it. For invalid
files the fixes are applied too: the result must compile, be a fixed point, and leave no
finding of a code whose fix was applied.

Cases that fail because of a known amplint bug are listed in ``KNOWN_BUGS`` (findings) or
``KNOWN_FIX_BUGS`` (fixed output) and run as strict xfails, so the suite stays green while
it documents the bug.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from amplint.api import check_source
from amplint.catalog import known_codes
from amplint.engine.run import fix_bytes

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
CODES = known_codes()
EXPECT = re.compile(r"#\s*expect:\s*(AMP\d{3}(?:\s*,\s*AMP\d{3})*)")

#: corpus file (relative to CORPUS) -> the amplint bug that makes its findings differ.
KNOWN_BUGS: dict[str, str] = {}

KNOWN_FIX_BUGS: dict[str, str] = {}


def _expected(text: str) -> set[tuple[int, str]]:
    expected = set()
    for row, line in enumerate(text.splitlines(), start=1):
        match = EXPECT.search(line)
        if match:
            expected |= {(row, code.strip()) for code in match.group(1).split(",")}
    return expected


def _findings(data: bytes, name: str) -> set[tuple[int, str]]:
    return {(f.location.row, f.code) for f in check_source(data, name, CODES)}


def _cases(kind: str, bugs: dict[str, str]) -> list:
    cases = []
    for path in sorted((CORPUS / kind).glob("*.py")):
        key = f"{kind}/{path.name}"
        marks = []
        if key in bugs:
            marks.append(pytest.mark.xfail(strict=True, reason=bugs[key]))
        cases.append(pytest.param(path, id=key, marks=marks))
    return cases


ALL_CASES = _cases("valid", KNOWN_BUGS) + _cases("invalid", KNOWN_BUGS)
FIX_CASES = _cases("invalid", {})


def test_corpus_is_not_empty() -> None:
    assert len(_cases("valid", {})) >= 10
    assert len(_cases("invalid", {})) >= 10


@pytest.mark.parametrize("path", ALL_CASES)
def test_findings_match_expect_markers(path: Path) -> None:
    data = path.read_bytes()
    expected = _expected(data.decode())
    if path.parent.name == "valid":
        assert not expected, "valid files carry no expect markers"
    else:
        assert expected, "an invalid file marks at least one expected finding"
    assert _findings(data, path.name) == expected


def _fixed(path: Path) -> tuple[bytes, set[str]]:
    """The file after every (also unsafe) fix, and the codes whose fixes were offered."""
    data = path.read_bytes()
    fixed_codes = {f.code for f in check_source(data, path.name, CODES) if f.fix is not None}
    result = fix_bytes(data, path.name, CODES, unsafe=True)
    return (result.data if result.data is not None else data), fixed_codes


@pytest.mark.parametrize("path", FIX_CASES)
def test_fix_compiles_is_a_fixed_point_and_clears_its_codes(path: Path) -> None:
    fixed, fixed_codes = _fixed(path)
    ast.parse(fixed)
    compile(fixed, str(path), "exec")
    again = fix_bytes(fixed, path.name, CODES, unsafe=True)
    assert again.data is None, "fixing the fixed file changed it again"
    remaining = {code for _, code in _findings(fixed, path.name)}
    assert not remaining & fixed_codes


_CALL = re.compile(r"^\s*([\w.]+)\.(step|update)\(", re.MULTILINE)


@pytest.mark.parametrize("path", _cases("invalid", KNOWN_FIX_BUGS))
def test_fixed_scaler_updates_follow_a_step(path: Path) -> None:
    """Every ``scaler.update()`` line of the fixed file follows a step since the previous
    update (GradScaler asserts that), read in source order per receiver."""
    fixed, _ = _fixed(path)
    scalers = {
        receiver
        for receiver, method in _CALL.findall(fixed.decode())
        if method == "update" and "scaler" in receiver.lower()
    }
    for scaler in scalers:
        methods = [m for r, m in _CALL.findall(fixed.decode()) if r == scaler]
        for previous, current in zip(["update", *methods], methods, strict=False):
            assert not (previous == current == "update"), f"{scaler}.update() twice in a row"


FIXED = CORPUS / "fixed"
FOUNDATION_CODES = frozenset({"AMP001", "AMP002", "AMP003"})


@pytest.mark.parametrize(
    "name", sorted(p.name for p in FIXED.glob("*.py")), ids=lambda name: name.removesuffix(".py")
)
def test_fix_gives_the_reviewed_whole_file(name: str) -> None:
    """`amplint fix --unsafe-fixes` output, byte for byte, as reviewed by hand."""
    source = (CORPUS / "invalid" / name).read_bytes()
    fixed = fix_bytes(source, name, FOUNDATION_CODES, unsafe=True)
    assert fixed.data == (FIXED / name).read_bytes()
