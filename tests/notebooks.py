"""Building nbformat-valid notebooks for the tests, the way Jupyter writes them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

PYTHON_KERNEL = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python", "version": "3.11.0"},
}


def notebook(cells: Sequence[str | tuple[str, str]], metadata: dict | None = None):  # type: ignore[no-untyped-def]
    """A notebook of code cells (a plain string) and markdown cells (``("md", text)``); each
    code cell gets a stream output and an execution count, as a run notebook has."""
    nb = new_notebook(metadata={**PYTHON_KERNEL, **(metadata or {})})
    count = 0
    for cell in cells:
        if isinstance(cell, tuple):
            nb.cells.append(new_markdown_cell(cell[1]))
            continue
        count += 1
        nb.cells.append(
            new_code_cell(
                cell,
                execution_count=count,
                outputs=[new_output("stream", name="stdout", text=f"out {count}\n")],
            )
        )
    nbformat.validate(nb)
    return nb


def write(path: Path, cells: Sequence[str | tuple[str, str]], **kwargs) -> Path:  # type: ignore[no-untyped-def]
    nbformat.write(notebook(cells, **kwargs), str(path))
    return path


def code_sources(path: Path) -> list[str]:
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]
