"""Per-rank reports of ``amplint run --report r.json`` under ``torchrun``, merged by rank 0.

Every rank writes its own report beside the given path (``r.rank1.json``), each finding
carrying its rank; rank 0 waits a bounded time for the other ranks' files and writes the
merged report at the given path. The exchange goes through the file system at exit, never
through a collective: it works when a rank failed, when the process group is gone, and
adds nothing to a training step. A rank whose file never came is named in
``"missing_ranks"``. Rank 0 then prints the merged summary (findings with the ranks that
reported them, :func:`format_merged_summary`); the other ranks print one line pointing at
their own file (:func:`pointer_line`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .ranks import rank_info

__all__ = [
    "MERGE_TIMEOUT_ENV",
    "Written",
    "begin",
    "format_merged_summary",
    "merge_reports",
    "merge_summaries",
    "pointer_line",
    "rank_report_path",
    "write_report",
]

#: Seconds rank 0 waits for the other ranks' report files (environment variable).
MERGE_TIMEOUT_ENV = "AMPLINT_MERGE_TIMEOUT"
_DEFAULT_TIMEOUT = 60.0
# When rank 0 failed or is being stopped (torchrun's SIGTERM after another rank failed; it
# kills for good after 30 s): the other ranks may only end once rank 0 has, so it waits
# briefly, and a rank that ends after the merge adds its own report.
_FAILED_TIMEOUT = 3.0
_LOCK_TIMEOUT = 10.0
# A rank file whose rank started this much earlier than rank 0 is left over from an
# earlier run: the ranks of one launch start within seconds of each other.
_STALE_AFTER = 120.0
_POLL = 0.05

_started = time.time()


# What tells one launch from another, for report files left over from an earlier run.
_RUN_ENV = ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "MASTER_ADDR", "MASTER_PORT")


def _run_id(world_size: int) -> str:
    parts = [f"{name}={os.environ[name]}" for name in _RUN_ENV if name in os.environ]
    return ";".join([f"WORLD_SIZE={world_size}", *parts])


def rank_report_path(path: str, rank: int) -> str:
    """Where ``rank`` writes its own report for ``--report path``: ``r.json`` ->
    ``r.rank1.json``."""
    root, ext = os.path.splitext(path)
    return f"{root}.rank{rank}{ext}"


# Writing and merging -----------------------------------------------------------------------


def begin(report_path: str | None) -> None:
    """At the start of ``amplint run``: note the start time and remove this rank's report
    file left from an earlier run, so that rank 0 cannot merge it into this one."""
    global _started
    _started = time.time()
    info = rank_info()
    if report_path is None or info is None:
        return
    with contextlib.suppress(OSError):
        os.remove(rank_report_path(report_path, info.rank))


def _write_json(path: str, document: dict[str, Any]) -> None:
    # Written beside and renamed into place: a reader never sees half a file.
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def _merge_timeout(status: int) -> float:
    value = os.environ.get(MERGE_TIMEOUT_ENV, "").strip()
    timeout = _DEFAULT_TIMEOUT
    if value:
        try:
            timeout = max(0.0, float(value))
        except ValueError:
            print(
                f"amplint: {MERGE_TIMEOUT_ENV}={value!r} is not a number of seconds; "
                f"using {_DEFAULT_TIMEOUT:g}",
                file=sys.stderr,
            )
    if status:
        # Rank 0 failed (or is being stopped): the other ranks may be blocked in a
        # collective that only its exit ends. They add their reports when they end.
        timeout = min(timeout, _FAILED_TIMEOUT)
    return timeout


@dataclass(frozen=True)
class Written:
    """What :func:`write_report` wrote for this rank."""

    rank: int
    path: str  # this rank's own report
    findings: int  # how many findings it holds
    merged: dict[str, Any] | None = None  # rank 0: the merged report written at the path


def write_report(path: str, document: dict[str, Any]) -> Written | None:
    """Write ``document`` (this process's report) as a distributed run needs.

    Returns None outside a distributed run: the caller writes ``path`` as usual. Every
    rank writes its report, each finding carrying its rank, to :func:`rank_report_path`.
    Rank 0 then waits (``AMPLINT_MERGE_TIMEOUT`` seconds at most, 60 by default; 3 when
    it failed itself) for the others' and writes the merged report at ``path``. A rank
    that ends after that merges its report in itself. Raises ``OSError`` where a file
    cannot be written.
    """
    info = rank_info()
    if info is None:
        return None
    own = dict(document)
    own["findings"] = [{**finding, "rank": info.rank} for finding in document["findings"]]
    own.update(
        rank=info.rank,
        world_size=info.world_size,
        local_rank=info.local_rank,
        run_id=_run_id(info.world_size),
        started=_started,
    )
    own_path = rank_report_path(path, info.rank)
    _write_json(own_path, own)
    if info.rank == 0:
        status = document.get("exit_status", 0)
        timeout = _merge_timeout(status if isinstance(status, int) else 0)
        _wait_for_ranks(path, own, timeout)
        with _merge_lock(path):
            merged = _merge_files(path, own, own)
        if merged["missing_ranks"]:
            missing = ", ".join(str(rank) for rank in merged["missing_ranks"])
            print(
                f"amplint: no report yet from rank(s) {missing} after {timeout:g} s: {path} "
                "has the others; a rank that ends later adds its own",
                file=sys.stderr,
            )
        return Written(info.rank, own_path, len(own["findings"]), merged)
    with _merge_lock(path):
        merged = _read(path)
        # Rank 0 merged without this rank (it gave up waiting, or failed): merge again.
        if (
            isinstance(merged, dict)
            and info.rank in (merged.get("missing_ranks") or [])
            and merged.get("run_id") == own["run_id"]
            and _recent(merged.get("started"), own["started"])
        ):
            rank0 = _read(rank_report_path(path, 0))
            if _valid(rank0, 0, merged):
                _merge_files(path, rank0, own)
    return Written(info.rank, own_path, len(own["findings"]))


def format_merged_summary(merged: dict[str, Any]) -> str:
    """The findings table of a merged report, with the ranks that reported each finding
    (what rank 0 prints at exit in place of its own table)."""
    findings = [f for f in merged.get("findings") or [] if isinstance(f, dict)]
    ranks = ", ".join(str(rank) for rank in merged.get("ranks") or [])
    rows = [
        (
            f"{f.get('filename')}:{f.get('line')}",
            str(f.get("code")),
            str(f.get("count")),
            str(f.get("first_step")),
            ",".join(str(rank) for rank in f.get("ranks") or []),
        )
        for f in findings
    ]
    header = ("location", "code", "count", "first step", "ranks")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    title = f"amplint: {len(findings)} AMP finding(s), merged from rank(s) {ranks}"
    missing = merged.get("missing_ranks") or []
    if missing:
        title += f" (no report from rank(s) {', '.join(str(rank) for rank in missing)})"
    lines = [title]
    for row in [header, *rows]:
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    lines.append("")
    lines.extend(f"{f.get('filename')}:{f.get('line')}: {f.get('message')}" for f in findings)
    return "\n".join(lines)


def pointer_line(written: Written) -> str:
    """What a rank other than 0 prints at exit: where its own report is."""
    return (
        f"amplint: rank {written.rank}: {written.findings} AMP finding(s), report in "
        f"{written.path} (rank 0 prints the merged summary)"
    )


def _merge_files(path: str, rank0: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Merge rank 0's report, ``own`` and every other rank's file of this launch into
    ``path``; returns the merged report."""
    found = {rank0["rank"]: rank0, own["rank"]: own}
    for rank in range(rank0["world_size"]):
        if rank not in found:
            document = _read(rank_report_path(path, rank))
            if _valid(document, rank, rank0):
                found[rank] = document
    documents = [found[rank] for rank in sorted(found)]
    merged = merge_reports(documents, rank0["world_size"])
    merged["rank_reports"] = {
        str(doc["rank"]): os.path.basename(rank_report_path(path, doc["rank"])) for doc in documents
    }
    merged["run_id"], merged["started"] = rank0["run_id"], rank0["started"]
    _write_json(path, merged)
    return merged


def _recent(started: Any, reference: Any) -> bool:
    return (
        isinstance(started, (int, float))
        and isinstance(reference, (int, float))
        and abs(started - reference) <= _STALE_AFTER
    )


def _valid(document: Any, rank: int, reference: dict[str, Any]) -> bool:
    """``document`` is ``rank``'s report of the launch ``reference`` belongs to."""
    return (
        isinstance(document, dict)
        and document.get("rank") == rank
        and document.get("run_id") == reference.get("run_id")
        and _recent(document.get("started"), reference.get("started"))
    )


def _read(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _wait_for_ranks(path: str, own: dict[str, Any], timeout: float) -> None:
    """Until every rank's report of this launch is there, or ``timeout`` seconds."""
    waiting = [rank for rank in range(own["world_size"]) if rank != own["rank"]]
    deadline = time.monotonic() + timeout
    with _stopped_by_signals() as stopping:
        while True:
            waiting = [
                rank
                for rank in waiting
                if not _valid(_read(rank_report_path(path, rank)), rank, own)
            ]
            now = time.monotonic()
            if not waiting or now >= deadline:
                return
            if stopping.is_set():
                # Stopped while waiting: the other ranks are being stopped too, and write
                # their files on their way out. Wait a little for them, not the full time.
                deadline = min(deadline, now + _FAILED_TIMEOUT)
                stopping.clear()
            time.sleep(_POLL)


@contextlib.contextmanager
def _merge_lock(path: str) -> Iterator[None]:
    """One merger at a time (rank 0, or a rank that ended after it), so that the last one
    sees every report written before it. Best effort: a lock left by a killed process is
    taken over after a while, and a lock that cannot be had does not stop the merge."""
    lock = f"{path}.lock"
    deadline = time.monotonic() + _LOCK_TIMEOUT
    held = False
    while not held:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            held = True
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - os.path.getmtime(lock) > _LOCK_TIMEOUT:
                    os.remove(lock)  # its holder died holding it
                    continue
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL)
        except OSError:
            break
    try:
        yield
    finally:
        if held:
            with contextlib.suppress(OSError):
                os.remove(lock)


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[threading.Event]:
    """While rank 0 waits, SIGTERM/SIGINT shorten the wait instead of killing the process
    before it has written the merged report (main thread only, where handlers can be set)."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum: int, frame: types.FrameType | None) -> None:
        event.set()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, OSError):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield event
    finally:
        for signum, old in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(signum, old)


def merge_reports(documents: list[dict[str, Any]], world_size: int) -> dict[str, Any]:
    """One report from the per-rank reports (at least one, in rank order).

    Findings are merged by ``(code, filename, line)``: ``count`` summed, ``first_step``
    the earliest, ``ranks`` the ranks that reported it. ``exit_status`` is the first
    non-zero status in rank order (0 when every rank that reported ended well);
    ``missing_ranks`` lists the ranks whose report never came.
    """
    merged_findings: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for document in documents:
        rank = document.get("rank")
        for finding in document.get("findings", []):
            key = (finding.get("code"), finding.get("filename"), finding.get("line"))
            entry = merged_findings.get(key)
            if entry is None:
                entry = {k: v for k, v in finding.items() if k != "rank"}
                entry["ranks"] = []
                merged_findings[key] = entry
            else:
                entry["count"] = entry.get("count", 0) + finding.get("count", 0)
                entry["first_step"] = min(entry.get("first_step", 0), finding.get("first_step", 0))
            if rank not in entry["ranks"]:
                entry["ranks"].append(rank)
    first = documents[0]
    merged: dict[str, Any] = {"findings": list(merged_findings.values())}
    for key, value in first.items():
        if key not in ("rank", "local_rank", "run_id", "started", "findings"):
            merged[key] = value
    # Lists of notes (e.g. amplint's own internal errors) from every rank.
    for document in documents[1:]:
        for key, value in document.items():
            if isinstance(value, list) and isinstance(merged.get(key), list) and key != "findings":
                merged[key] = merged[key] + [item for item in value if item not in merged[key]]
    statuses = {document["rank"]: document.get("exit_status", 0) for document in documents}
    present = set(statuses)
    merged["exit_status"] = next((status for status in statuses.values() if status), 0)
    merged["world_size"] = world_size
    merged["ranks"] = sorted(present)
    merged["missing_ranks"] = [rank for rank in range(world_size) if rank not in present]
    merged["exit_statuses"] = {str(rank): status for rank, status in statuses.items()}
    merged["summary"] = merge_summaries(
        [(document["rank"], document.get("summary")) for document in documents]
    )
    return merged


def merge_summaries(summaries: list[tuple[int, dict[str, Any] | None]]) -> dict[str, Any] | None:
    """The numerical-health summaries of the ranks as one.

    Steps and skipped steps are the same on every rank (``found_inf`` is all-reduced by
    ``ShardedGradScaler``, and DDP all-reduces the gradients it is computed from): their
    largest value. The scale's range spans the ranks; underflow shares are averaged; the
    first overflow is the earliest over the ranks, with its rank; ``per_rank`` keeps each
    rank's own summary.
    """
    present = [(rank, summary) for rank, summary in summaries if isinstance(summary, dict)]
    if not present:
        return None
    first = dict(present[0][1])
    merged: dict[str, Any] = dict(first)
    for key in ("steps", "skipped_steps", "nonfinite_loss_steps", "scheduler_steps_after_skip"):
        values = [s[key] for _, s in present if isinstance(s.get(key), (int, float))]
        if values:
            merged[key] = max(values)
    scales = [(rank, s["scale"]) for rank, s in present if isinstance(s.get("scale"), dict)]
    if scales:
        merged["scale"] = {
            "min": min(scale["min"] for _, scale in scales),
            "max": max(scale["max"] for _, scale in scales),
            "final": scales[0][1]["final"],
        }
    for key in ("grad_underflow_share", "grad_zero_share"):
        values = [s[key] for _, s in present if isinstance(s.get(key), (int, float))]
        merged[key] = sum(values) / len(values) if values else None
    grad_max = [s["grad_max"] for _, s in present if isinstance(s.get("grad_max"), (int, float))]
    if grad_max:
        merged["grad_max"] = max(grad_max)
    overflows = [
        {**s["first_overflow"], "rank": rank}
        for rank, s in present
        if isinstance(s.get("first_overflow"), dict)
    ]
    merged["first_overflow"] = min(overflows, key=lambda o: o.get("step", 0), default=None)
    closest = [
        {**entry, "rank": rank}
        for rank, s in present
        for entry in s.get("closest_to_overflow") or []
        if isinstance(entry, dict)
    ]
    closest.sort(key=lambda entry: -_magnitude(entry.get("max_abs")))
    merged["closest_to_overflow"] = closest[:3]
    merged["per_rank"] = {
        str(rank): {key: value for key, value in s.items() if key != "config"}
        for rank, s in present
    }
    return merged


def _magnitude(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        number = float(value)  # "inf", "nan" as the summary writes them
    except (TypeError, ValueError):
        return 0.0
    return math.inf if math.isnan(number) else number
