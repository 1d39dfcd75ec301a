"""A ruff-like cache of findings: a re-run over unchanged files parses nothing.

One JSON file per (amplint version, effective settings, selected codes) under
``<project root>/.amplint_cache/``. Each entry is keyed by the file's absolute path and
holds its size, modification time and content hash: an unchanged ``stat`` is trusted as
is; a changed one is checked against the content hash before the file is analysed again.
Writes replace the file atomically, so concurrent runs never see half a cache (the last
writer wins, and both wrote complete, correct entries).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from amplint import __version__
from amplint.findings import Finding, finding_from_dict, finding_to_dict

CACHE_DIRECTORY = ".amplint_cache"
_README = "Created by amplint: a cache of findings. Safe to delete (`amplint clean`).\n"


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class Entry:
    size: int
    mtime_ns: int
    digest: str
    findings: list[dict]  # type: ignore[type-arg]


class FindingsCache:
    def __init__(self, root: Path, key: str) -> None:
        self.directory = root / CACHE_DIRECTORY / __version__
        self.path = self.directory / f"{key}.json"
        self._entries: dict[str, Entry] = {}
        self._dirty = False
        self._load()

    @staticmethod
    def key_for(fingerprint: str, selection: str) -> str:
        text = fingerprint + "|" + selection
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text("utf-8"))
            self._entries = {path: Entry(*values) for path, values in raw["files"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            self._entries = {}  # missing or damaged: start afresh

    def lookup_by_stat(self, path: str, stat: os.stat_result) -> Entry | None:
        entry = self._entries.get(path)
        if entry is not None and entry.size == stat.st_size and entry.mtime_ns == stat.st_mtime_ns:
            return entry
        return None

    def digest_of(self, path: str) -> str | None:
        entry = self._entries.get(path)
        return entry.digest if entry is not None else None

    def lookup_by_content(self, path: str, digest: str, stat: os.stat_result) -> Entry | None:
        entry = self._entries.get(path)
        if entry is None or entry.digest != digest:
            return None
        entry.size, entry.mtime_ns = stat.st_size, stat.st_mtime_ns  # touched, not changed
        self._dirty = True
        return entry

    def store(self, path: str, stat: os.stat_result, digest: str, findings: list[Finding]) -> None:
        self._entries[path] = Entry(
            stat.st_size, stat.st_mtime_ns, digest, [finding_to_dict(f) for f in findings]
        )
        self._dirty = True

    @staticmethod
    def findings_of(entry: Entry, filename: str) -> list[Finding]:
        return [finding_from_dict(data, filename) for data in entry.findings]

    def save(self) -> None:
        if not self._dirty:
            return
        payload = {
            "files": {
                path: [e.size, e.mtime_ns, e.digest, e.findings]
                for path, e in self._entries.items()
            }
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            readme = self.directory.parent / "README"
            if not readme.exists():
                readme.write_text(_README)
            import tempfile  # imported when saving: a --no-cache run never needs it

            handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(payload, stream, separators=(",", ":"))
            os.replace(temporary, self.path)
        except OSError:
            # A cache that cannot be written only costs speed next time.
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(temporary)


def clean(root: Path) -> bool:
    """Remove the cache directory under ``root``; whether there was one."""
    directory = root / CACHE_DIRECTORY
    if not directory.exists():
        return False
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
    return True
