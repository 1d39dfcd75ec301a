"""Reading, parsing and atomically rewriting user source files without losing a byte."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from amplint.catalog import PARSE_ERROR_CODE, name_of
from amplint.findings import Finding, Position

if TYPE_CHECKING:
    import ast

    import libcst as cst

    from amplint.engine.piecewise import CutPlan

_PARSER_PREFIX = re.compile(r"^parser error: (error at \d+:\d+: )?")


class SourceError(Exception):
    """A file that cannot be read, decoded or parsed; ``position`` where known."""

    def __init__(self, message: str, position: Position | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position or Position(1, 1)


@dataclass
class ParsedSource:
    """A source parsed by libcst, with the text its positions refer to."""

    module: cst.Module
    #: the decoded text libcst works on (no BOM); edits are positions in it.
    text: str
    #: False for a tree assembled from pieces whose code was not compared with the text
    #: (``parse(..., verify=False)``): check it (:func:`amplint.engine.run.lint_bytes` does,
    #: where it has findings) before reporting from it.
    verified: bool = True

    def encode(self, text: str) -> bytes:
        """Encode edited text the way the original was encoded (coding cookie, BOM)."""
        return text.encode(self.module.encoding)


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError as error:
        raise SourceError("is a directory") from error
    except OSError as error:
        raise SourceError(f"cannot read file: {error.strerror or error}") from error


def parse(
    data: bytes, syntax: ast.Module | CutPlan | None = None, *, verify: bool = True
) -> ParsedSource:
    """Parse ``data`` with libcst, honouring its BOM and coding cookie.

    ``syntax`` is CPython's tree of ``data`` where one was made already, or the places to
    cut it read from that tree (a large file is cut into pieces by it). ``verify=False``:
    see :attr:`ParsedSource.verified`.
    """
    import libcst as cst  # imported here: a run answered from the cache never needs it

    from amplint.engine.cstparse import parse_module
    from amplint.engine.piecewise import PIECEWISE_ABOVE, parse_large

    if b"\x00" in data:
        raise SourceError("source contains NUL bytes")
    if len(data) > TRIM_ABOVE:
        _release_free_memory()
    try:
        module = parse_large(data, syntax, verify=verify) if len(data) > PIECEWISE_ABOVE else None
        pieced = module is not None
        if module is None:
            module = parse_module(data)
    except cst.ParserSyntaxError as error:
        message = str(error.message).strip().splitlines()[0] if error.message else ""
        message = _PARSER_PREFIX.sub("", message) or "invalid syntax"
        raise SourceError(
            f"SyntaxError: {message}", Position(error.raw_line, error.raw_column + 1)
        ) from error
    except (UnicodeDecodeError, LookupError, SyntaxError) as error:
        raise SourceError(f"cannot decode source: {error}") from error
    except RecursionError as error:
        raise SourceError("source is nested too deeply to analyse") from error
    # Decoding ourselves is what libcst did (same encoding, BOM dropped) and spares a full
    # code generation pass over the tree.
    text = data.decode(module.encoding)
    if text.startswith("\ufeff"):
        text = text[1:]
    return ParsedSource(module, text, verified=verify or not pieced)


#: Before parsing a file above this size, free heap pages go back to the system: libcst's
#: parse of a 100 KB module needs some 35 MB of working memory of its own.
TRIM_ABOVE = 64 * 1024


def _release_free_memory() -> None:
    """Hand the C heap's free pages back to the system before a large parse.

    glibc keeps what earlier files' trees freed, so a process that linted many files holds
    it when the next large one is parsed: over torch's tree in one process the peak was
    115 MB, 97 MB with this. Only glibc has ``malloc_trim``; elsewhere this does nothing.
    """
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = _no_trim
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            if name is not None:
                _malloc_trim = getattr(ctypes.CDLL(name), "malloc_trim", _no_trim)
        except (ImportError, OSError):
            pass
    _malloc_trim(0)


def _no_trim(pad: int) -> int:
    return 0


_malloc_trim: Callable[[int], int] | None = None


def parse_text(text: str, like: ParsedSource) -> ParsedSource:
    """Re-parse edited text, keeping the original's encoding."""
    data = like.encode(text)
    return parse(data)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, keeping its permission bits. A symbolic
    link is written through: the file it points at is replaced, the link stays a link."""
    import tempfile  # only fixes write: checking never needs it

    path = Path(os.path.realpath(path))
    mode = stat.S_IMODE(path.stat().st_mode)
    directory = path.parent
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".amplint", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def error_finding(filename: str, error: SourceError) -> Finding:
    """The one diagnostic of a file that cannot be read, decoded or parsed."""
    return Finding(
        code=PARSE_ERROR_CODE,
        message=error.message,
        filename=filename,
        location=error.position,
        end_location=error.position,
        name=name_of(PARSE_ERROR_CODE),
    )
