"""Which rank this process is in a distributed run (``torchrun``), or None.

Read by the reports (findings carry their rank) and by the per-rank report files; it
imports nothing of amplint, so that any module may ask.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

__all__ = ["RankInfo", "int_env", "rank_info"]


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int


def int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    try:
        return int(value)
    except ValueError:
        return None


def _from_env() -> RankInfo | None:
    # torchrun's (and torch.distributed's env:// convention). Other launchers' variables
    # (Slurm, MPI) are not read: they are also set where one process runs alone, and a rank
    # 0 that waited for ranks that do not exist would only slow the exit down.
    rank, size = int_env("RANK"), int_env("WORLD_SIZE")
    if rank is None or size is None or not 0 <= rank < size:
        return None
    local = int_env("LOCAL_RANK")
    return RankInfo(rank, size, rank if local is None else local)


def rank_info() -> RankInfo | None:
    """This process's rank when it is one of several, else None.

    ``torch.distributed`` answers while a process group is initialised; otherwise (before
    ``init_process_group``, after ``destroy_process_group``) the launcher's environment.
    A world of one process is not distributed.
    """
    info = None
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(RuntimeError, ValueError):
            local = int_env("LOCAL_RANK")
            rank = dist.get_rank()
            info = RankInfo(rank, dist.get_world_size(), rank if local is None else local)
    if info is None:
        info = _from_env()
    if info is None or info.world_size < 2:
        return None
    return info
