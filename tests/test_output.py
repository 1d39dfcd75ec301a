"""The output formats (amplint.output), fed hand-made findings."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from amplint.catalog import PARSE_ERROR_CODE
from amplint.findings import Edit, Finding, Fix, Position
from amplint.output import FORMATS, emit, emit_statistics
from amplint.output.github import escape_data, escape_property

SAFE_FIX = Fix(
    applicability="safe",
    message="Move the backward out of the autocast block",
    edits=(Edit(content="", location=Position(4, 1), end_location=Position(5, 1)),),
)
UNSAFE_FIX = Fix(
    applicability="unsafe",
    message="Drop the `.half()` cast",
    edits=(Edit(content="model", location=Position(2, 5), end_location=Position(2, 17)),),
)


def finding(
    code: str = "AMP001",
    *,
    filename: str = "src/train.py",
    row: int = 4,
    column: int = 9,
    end: tuple[int, int] | None = None,
    message: str = "`backward()` runs inside an enabled autocast region",
    fix: Fix | None = None,
    name: str = "backward-inside-autocast",
    source_line: str = "        loss.backward()\n",
) -> Finding:
    end_row, end_column = end or (row, column + 15)
    return Finding(
        code=code,
        message=message,
        filename=filename,
        location=Position(row, column),
        end_location=Position(end_row, end_column),
        fix=fix,
        name=name,
        source_line=source_line,
    )


def parse_error(filename: str = "broken.py") -> Finding:
    return Finding(
        code=PARSE_ERROR_CODE,
        message="cannot parse: invalid syntax",
        filename=filename,
        location=Position(1, 1),
        end_location=Position(1, 1),
    )


def half() -> Finding:
    return finding(
        "AMP009",
        row=2,
        column=5,
        end=(2, 17),
        message="fp16 parameters with a GradScaler",
        fix=UNSAFE_FIX,
        name="half-params-with-gradscaler",
        source_line="    model.half()\n",
    )


def render(fmt: str, findings: list[Finding], **options: Any) -> str:
    stream = io.StringIO()
    emit(fmt, findings, stream, **options)
    return stream.getvalue()


def test_formats_are_the_documented_ones() -> None:
    assert FORMATS == ("concise", "full", "json", "sarif", "github")


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="xml"):
        render("xml", [])


# --------------------------------------------------------------------------- concise


def test_concise_lines_and_summary() -> None:
    out = render("concise", [finding(fix=SAFE_FIX), finding("AMP002", row=9, column=1)])
    assert out.splitlines() == [
        "src/train.py:4:9: AMP001 [*] `backward()` runs inside an enabled autocast region",
        "src/train.py:9:1: AMP002 `backward()` runs inside an enabled autocast region",
        "Found 2 errors.",
        "[*] 1 fixable with the `amplint fix` command.",
    ]


def test_concise_sorts_findings() -> None:
    later = finding(filename="b.py", row=1)
    earlier = finding(filename="a.py", row=7)
    first_in_file = finding(filename="b.py", row=1, column=1)
    lines = render("concise", [later, earlier, first_in_file]).splitlines()
    assert [line.split(": ")[0] for line in lines[:3]] == ["a.py:7:9", "b.py:1:1", "b.py:1:9"]


def test_concise_clean_run() -> None:
    assert render("concise", []) == "All checks passed!\n"


def test_concise_singular_and_no_fixable_line() -> None:
    assert render("concise", [finding()]).splitlines()[-1] == "Found 1 error."


def test_concise_unsafe_fix_is_hidden_without_unsafe_fixes() -> None:
    lines = render("concise", [half()]).splitlines()
    assert "[*]" not in lines[0]
    assert lines[-1] == (
        "No fixes available (1 hidden fix can be enabled with the `--unsafe-fixes` option)."
    )


def test_concise_mixed_safe_and_unsafe_fixes() -> None:
    findings = [finding(fix=SAFE_FIX), half(), half()]
    assert render("concise", findings).splitlines()[-1] == (
        "[*] 1 fixable with the `amplint fix` command "
        "(2 hidden fixes can be enabled with the `--unsafe-fixes` option)."
    )


def test_concise_with_unsafe_fixes_marks_unsafe_fixes() -> None:
    lines = render("concise", [half()], unsafe_fixes=True).splitlines()
    assert lines[0] == "src/train.py:2:5: AMP009 [*] fp16 parameters with a GradScaler"
    assert lines[-1] == "[*] 1 fixable with the `amplint fix --unsafe-fixes` command."


def test_concise_after_fix_counts_fixed_and_remaining() -> None:
    out = render("concise", [finding()], fixed={"src/a.py": 2, "src/b.py": 1})
    assert out.splitlines() == [
        "src/train.py:4:9: AMP001 `backward()` runs inside an enabled autocast region",
        "Found 4 errors (3 fixed, 1 remaining).",
    ]


def test_concise_show_fixes_lists_fixed_files() -> None:
    out = render("concise", [], show_fixes=True, fixed={"src/b.py": 1, "src/a.py": 2, "c.py": 0})
    assert out.splitlines() == [
        "Fixed 3 errors:",
        "- src/a.py: 2 fixes",
        "- src/b.py: 1 fix",
        "",
        "Found 3 errors (3 fixed, 0 remaining).",
    ]


def test_concise_nothing_fixed_is_a_clean_run() -> None:
    assert render("concise", [], show_fixes=True, fixed={}) == "All checks passed!\n"


# --------------------------------------------------------------------------- full


def test_full_shows_source_line_caret_and_help() -> None:
    out = render("full", [finding(fix=SAFE_FIX)])
    assert out.splitlines() == [
        "src/train.py:4:9: AMP001 [*] `backward()` runs inside an enabled autocast region",
        "  |",
        "4 |         loss.backward()",
        "  |         ^^^^^^^^^^^^^^^ AMP001",
        "  |",
        "  = help: Move the backward out of the autocast block",
        "",
        "Found 1 error.",
        "[*] 1 fixable with the `amplint fix` command.",
    ]


def test_full_gutter_widens_with_row_number_and_multiline_span_runs_to_line_end() -> None:
    out = render("full", [finding(row=120, column=5, end=(122, 1), source_line="    with ctx:")])
    assert out.splitlines()[1:5] == [
        "    |",
        "120 |     with ctx:",
        "    |     ^^^^^^^^^ AMP001",
        "    |",
    ]


def test_full_caret_accounts_for_tabs_and_wide_characters() -> None:
    source = "\t名前 = loss.backward()"
    out = render("full", [finding(row=1, column=7, end=(1, 11), source_line=source)])
    code_line, caret_line = out.splitlines()[2:4]
    assert code_line == "1 |     名前 = loss.backward()"
    # A tab (4 cells), two wide characters (4 cells) and " = " (3 cells) precede `loss`.
    assert caret_line == "  | " + " " * 11 + "^^^^ AMP001"


def test_full_zero_width_span_gets_one_caret_and_parse_error_has_no_snippet() -> None:
    out = render("full", [finding(end=(4, 9)), parse_error()])
    lines = out.splitlines()
    assert lines[0] == "broken.py:1:1: AMP999 cannot parse: invalid syntax"
    assert lines[1] == ""
    assert "  |         ^ AMP001" in lines


# --------------------------------------------------------------------------- json


def test_json_round_trip_with_ruff_keys() -> None:
    data = json.loads(render("json", [finding(fix=SAFE_FIX), half(), parse_error()]))
    assert [item["code"] for item in data] == ["AMP999", "AMP009", "AMP001"]
    keys = {
        "code",
        "message",
        "filename",
        "location",
        "end_location",
        "fix",
        "url",
        "noqa_row",
        "cell",  # ruff's too: the notebook cell, null in a Python file
    }
    assert all(set(item) == keys for item in data)
    error, unsafe, safe = data
    assert error["fix"] is None
    assert error["noqa_row"] is None
    assert unsafe["fix"]["applicability"] == "unsafe"
    assert safe == {
        "code": "AMP001",
        "message": "`backward()` runs inside an enabled autocast region",
        "filename": "src/train.py",
        "location": {"row": 4, "column": 9},
        "end_location": {"row": 4, "column": 24},
        "fix": {
            "applicability": "safe",
            "message": "Move the backward out of the autocast block",
            "edits": [
                {
                    "content": "",
                    "location": {"row": 4, "column": 1},
                    "end_location": {"row": 5, "column": 1},
                }
            ],
        },
        "url": "https://github.com/amplint/amplint/blob/main/docs/rules/AMP001.md",
        "noqa_row": 4,
        "cell": None,
    }


def test_json_is_pretty_and_stable() -> None:
    findings = [finding(fix=SAFE_FIX), half()]
    first = render("json", findings)
    assert first == render("json", list(reversed(findings)))
    assert first.startswith("[\n  {\n")
    assert first.endswith("]\n")


def test_json_empty_and_unicode() -> None:
    assert json.loads(render("json", [])) == []
    out = render("json", [finding(message="Verlust: ∞ überläuft")])
    assert "Verlust: ∞ überläuft" in out
    assert json.loads(out)[0]["message"] == "Verlust: ∞ überläuft"


# --------------------------------------------------------------------------- sarif


def sarif(findings: list[Finding]) -> dict[str, Any]:
    return json.loads(render("sarif", findings))


def test_sarif_document_shape() -> None:
    document = sarif([finding(fix=SAFE_FIX), half(), finding(row=10)])
    assert document["version"] == "2.1.0"
    assert "sarif" in document["$schema"]
    (run,) = document["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "amplint"
    assert [rule["id"] for rule in driver["rules"]] == ["AMP001", "AMP009"]
    assert all(rule["shortDescription"]["text"] for rule in driver["rules"])
    assert len(run["results"]) == 3
    for result in run["results"]:
        assert result["level"] == "error"
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]


def test_sarif_result_location_and_fix() -> None:
    (run,) = sarif([finding(fix=SAFE_FIX)])["runs"]
    (result,) = run["results"]
    assert result["ruleId"] == "AMP001"
    assert result["message"]["text"] == "`backward()` runs inside an enabled autocast region"
    (location,) = result["locations"]
    physical = location["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "src/train.py"
    assert physical["region"] == {"startLine": 4, "startColumn": 9, "endLine": 4, "endColumn": 24}
    (change,) = result["fixes"][0]["artifactChanges"]
    (replacement,) = change["replacements"]
    assert replacement["deletedRegion"]["endLine"] == 5
    assert replacement["insertedContent"]["text"] == ""


def test_sarif_uri_is_relative_posix_and_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = str(tmp_path / "my project" / "train.py")
    (run,) = sarif([finding(filename=absolute)])["runs"]
    uri = run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "my%20project/train.py"


def test_sarif_without_findings_and_parse_error_rule() -> None:
    (run,) = sarif([])["runs"]
    assert run["results"] == []
    assert run["tool"]["driver"]["rules"] == []
    (run,) = sarif([parse_error()])["runs"]
    assert run["tool"]["driver"]["rules"][0]["name"] == "syntax-error"
    assert "fixes" not in run["results"][0]


# --------------------------------------------------------------------------- github


def test_github_annotation() -> None:
    out = render("github", [finding(fix=SAFE_FIX)])
    assert out == (
        "::error title=amplint (AMP001),file=src/train.py,line=4,col=9,endLine=4,endColumn=24"
        "::src/train.py:4:9: AMP001 `backward()` runs inside an enabled autocast region\n"
    )


def test_github_escapes_message_and_properties() -> None:
    out = render("github", [finding(filename="a,b:c%.py", message="50% off\r\nnext line")])
    assert out.count("\n") == 1
    properties, _, data = out.rstrip("\n").partition("::")[2].partition("::")
    assert "file=a%2Cb%3Ac%25.py" in properties
    assert data.endswith("50%25 off%0D%0Anext line")


def test_github_escape_helpers_escape_percent_first() -> None:
    assert escape_data("%0A\n") == "%250A%0A"
    assert escape_property("a:b,c") == "a%3Ab%2Cc"


def test_github_prints_nothing_when_clean() -> None:
    assert render("github", []) == ""


# --------------------------------------------------------------------------- statistics


def test_statistics_counts_codes_most_frequent_first() -> None:
    findings = [finding(fix=SAFE_FIX) for _ in range(12)] + [half(), parse_error()]
    stream = io.StringIO()
    emit_statistics(findings, stream)
    assert stream.getvalue().splitlines() == [
        "12\tAMP001\t[*] backward-inside-autocast",
        " 1\tAMP009\t[ ] half-params-with-gradscaler",
        " 1\tAMP999\t[ ] syntax-error",
    ]


def test_statistics_without_fixes_has_no_marks_and_empty_prints_nothing() -> None:
    stream = io.StringIO()
    emit_statistics([finding(), finding("AMP002", name="missing-scaler-update")], stream)
    assert stream.getvalue().splitlines() == [
        "1\tAMP001\tbackward-inside-autocast",
        "1\tAMP002\tmissing-scaler-update",
    ]
    empty = io.StringIO()
    emit_statistics([], empty)
    assert empty.getvalue() == ""


def test_statistics_unsafe_fixes_count_as_fixable_when_enabled() -> None:
    stream = io.StringIO()
    emit_statistics([half()], stream, unsafe_fixes=True)
    assert stream.getvalue() == "1\tAMP009\t[*] half-params-with-gradscaler\n"


# --------------------------------------------------------------------------- summary, full, stdin


def test_summary_never_passes_beside_unchecked_paths() -> None:
    assert render("concise", [], unchecked=2) == (
        "2 paths were not checked: see the errors above.\n"
    )
    out = render("full", [finding()], unchecked=1)
    assert out.splitlines()[-2:] == [
        "Found 1 error.",
        "1 path was not checked: see the error above.",
    ]


def test_quiet_leaves_out_every_summary_line() -> None:
    assert render("concise", [], quiet=True) == ""
    out = render("concise", [finding(fix=SAFE_FIX)], quiet=True, fixed={"a.py": 1})
    assert out == (
        "src/train.py:4:9: AMP001 [*] `backward()` runs inside an enabled autocast region\n"
    )


def test_full_shows_context_and_diff_from_the_given_source() -> None:
    text = "a = 1\nb = 2\nwith ctx:\n    x()\n    loss.backward()\nc = 3\nd = 4\ne = 5\n"
    fix = Fix(
        "unsafe",
        "Dedent it",
        (Edit(content="", location=Position(5, 1), end_location=Position(5, 5)),),
    )
    found = finding(
        filename="<stdin>", row=5, column=5, fix=fix, source_line="    loss.backward()\n"
    )
    out = render("full", [found], sources={"<stdin>": text}, unsafe_fixes=True)
    assert out.splitlines()[:18] == [
        "<stdin>:5:5: AMP001 [*] `backward()` runs inside an enabled autocast region",
        "  |",
        "3 | with ctx:",
        "4 |     x()",
        "5 |     loss.backward()",
        "  |     ^^^^^^^^^^^^^^^ AMP001",
        "6 | c = 3",
        "7 | d = 4",
        "  |",
        "  = help: Dedent it",
        "",
        "  Unsafe fix:",
        "  3 3 |  with ctx:",
        "  4 4 |      x()",
        "  5   | -    loss.backward()",
        "    5 | +loss.backward()",
        "  6 6 |  c = 3",
        "  7 7 |  d = 4",
    ]


def test_full_falls_back_to_the_finding_line_when_the_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "t.py"
    path.write_text("something else entirely\n" * 6)
    out = render("full", [finding(filename=str(path), fix=SAFE_FIX)])
    assert "4 |         loss.backward()" in out
    assert "something else" not in out and "Safe fix:" not in out


def test_statistics_as_json() -> None:
    stream = io.StringIO()
    emit_statistics([finding(fix=SAFE_FIX), finding(row=9), half()], stream, fmt="json")
    assert json.loads(stream.getvalue()) == [
        {
            "code": "AMP001",
            "name": "backward-inside-autocast",
            "count": 2,
            "fixable": True,
            "fixable_count": 1,
        },
        {
            "code": "AMP009",
            "name": "half-params-with-gradscaler",
            "count": 1,
            "fixable": False,
            "fixable_count": 0,
        },
    ]
    empty = io.StringIO()
    emit_statistics([], empty, fmt="json")
    assert empty.getvalue() == "[]\n"
