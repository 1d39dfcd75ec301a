"""Files no linter should crash on: each gets one clear line or is skipped, and the run goes on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEADER = "import torch\nwith torch.autocast('cuda'):\n    loss.backward()\n"
GOOD = HEADER  # one AMP001 at 3:5


def _hostile_files() -> dict[str, bytes]:
    return {
        "syntax_error.py": b"import torch\nwith torch.autocast('cuda')\n    loss.backward()\n",
        "python2.py": b"import torch\nprint 'x'\n" + HEADER.encode().split(b"\n", 1)[1],
        "nul_bytes.py": HEADER.encode() + b"x = 1\x00\n",
        "latin1_cookie.py": b"# -*- coding: latin-1 -*-\n" + HEADER.encode() + b"s = '\xe9'\n",
        "bad_utf8.py": HEADER.encode() + b"s = '\xff\xfe'\n",
        "bom.py": b"\xef\xbb\xbf" + HEADER.encode(),
        "crlf.py": HEADER.replace("\n", "\r\n").encode(),
        "mixed_newlines.py": HEADER.replace("\n", "\r\n", 1).encode(),
        "tabs.py": HEADER.replace("    ", "\t").encode(),
        "long_line.py": HEADER.encode() + b"x = '" + b"a" * 1_000_000 + b"'\n",
        "huge_literal.py": HEADER.encode() + b"x = [" + b",".join([b"1"] * 250_000) + b"]\n",
        "deep_parentheses.py": HEADER.encode() + b"x = " + b"(" * 5000 + b"1" + b")" * 5000 + b"\n",
        "deep_calls.py": HEADER.encode() + b"x = " + b"f(" * 199 + b")" * 199 + b"\n",
        "long_chain.py": HEADER.encode() + b"x = " + b"+".join([b"a"] * 100_000) + b"\n",
        "deep_indentation.py": HEADER.encode()
        + b"".join(b" " * i + b"if x:\n" for i in range(98))
        + b" " * 98
        + b"pass\n",
        "empty.py": b"",
        "only_comment.py": b"# torch.autocast loss.backward() optimizer.step()\n",
    }


@pytest.fixture
def hostile_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    for name, data in _hostile_files().items():
        (root / name).write_bytes(data)
    (root / "good.py").write_text(GOOD)
    (root / "package.py").mkdir()  # a directory named like a module
    (root / "package.py" / "inner.py").write_text(GOOD)
    (root / "loop").mkdir()
    (root / "loop" / "again").symlink_to(root / "loop", target_is_directory=True)
    (root / "dangling.py").symlink_to(root / "missing.py")
    return root


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amplint", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_check_survives_every_hostile_file(hostile_tree: Path) -> None:
    result = _run(["check", "--no-cache", "."], hostile_tree)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode in (1, 2), result.stderr
    lines = result.stdout.splitlines()

    def findings_for(name: str) -> list[str]:
        return [line for line in lines if line.startswith(f"{name}:")]

    for name in (
        "good.py",
        "package.py/inner.py",
        "bom.py",
        "crlf.py",
        "mixed_newlines.py",
        "tabs.py",
        "long_line.py",
        "latin1_cookie.py",
        "deep_indentation.py",
    ):
        assert any(": AMP001" in line for line in findings_for(name)), (name, lines)
    for name in (
        "syntax_error.py",
        "python2.py",
        "nul_bytes.py",
        "bad_utf8.py",
        "huge_literal.py",
        "deep_parentheses.py",
        "long_chain.py",
    ):
        found = findings_for(name)
        assert len(found) == 1 and ": AMP999 " in found[0], (name, found)
    for name in ("empty.py", "only_comment.py"):
        assert findings_for(name) == []
    # A dangling symlink met while walking is skipped, like any non-file entry.
    assert findings_for("dangling.py") == [] and result.stderr == ""


def test_fix_survives_every_hostile_file_and_only_touches_fixable_ones(
    hostile_tree: Path,
) -> None:
    before = {
        path: path.read_bytes()
        for path in hostile_tree.rglob("*.py")
        if path.is_file() and not path.is_symlink()
    }
    result = _run(["fix", "--no-cache", "."], hostile_tree)
    assert "Traceback" not in result.stderr + result.stdout
    for path, data in before.items():
        after = path.read_bytes()
        if ": AMP999 " in data.decode("latin-1") or after == data:
            continue
        # Whatever was rewritten still compiles and kept its BOM / newline style.
        compile(after, str(path), "exec")
        assert after.startswith(b"\xef\xbb\xbf") == data.startswith(b"\xef\xbb\xbf")
        assert (b"\r\n" in after) == (b"\r\n" in data)
    for name in (
        "syntax_error.py",
        "python2.py",
        "nul_bytes.py",
        "bad_utf8.py",
        "huge_literal.py",
        "deep_parentheses.py",
        "long_chain.py",
    ):
        path = hostile_tree / name
        assert path.read_bytes() == before[path], name


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "secret.py"
    target.write_text(GOOD)
    target.chmod(0)
    (tmp_path / "good.py").write_text(GOOD)
    result = _run(["check", "--no-cache", "."], tmp_path)
    assert "secret.py:1:1: AMP999 cannot read file" in result.stdout
    assert "good.py:3:5: AMP001" in result.stdout


def test_unreadable_file_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same path for root: reading fails with an OSError."""
    from amplint import api
    from amplint.config import load_settings

    (tmp_path / "secret.py").write_text(GOOD)
    (tmp_path / "good.py").write_text(GOOD)
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "secret.py":
            raise PermissionError(13, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.chdir(tmp_path)
    result = api.check_paths(
        [tmp_path], load_settings(None, tmp_path), {"AMP001"}, use_cache=False, jobs=1
    )
    messages = {(Path(f.filename).name, f.code, f.message) for f in result.findings}
    assert ("secret.py", "AMP999", "cannot read file: Permission denied") in messages
    assert any(name == "good.py" and code == "AMP001" for name, code, _ in messages)


def test_linter_never_imports_or_runs_the_code_it_reads(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    source = (
        f"import torch\nopen({str(marker)!r}, 'w').write('ran')\nraise SystemExit(3)\n" + HEADER
    )
    (tmp_path / "side_effects.py").write_text(source)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.amplint]\nselect = ["AMP"]\n# {marker} is never created by reading this\n'
    )
    for command in (["check", "."], ["fix", "."], ["fix", "--diff", "."]):
        result = _run(command, tmp_path)
        assert "Traceback" not in result.stderr
    assert not marker.exists()
