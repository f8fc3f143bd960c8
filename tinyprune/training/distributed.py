"""Thin helpers around ``torch.distributed`` so the training loop runs under ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) starts one process per replica and passes
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the
environment. Every helper here also works in a plain single process, where it is a no-op, so
library code (the loop, criteria that reduce statistics) calls them unconditionally.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from tinyprune.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")

_ENV_KEYS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits among the replicas."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        msg = f"environment variable {name} must be an integer, got {raw!r} (set by torchrun)"
        raise ConfigError(msg) from e


def default_backend() -> str:
    """``nccl`` when CUDA is available, ``gloo`` otherwise (CPU training)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_from_env(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised and a
    single-process :class:`DistInfo` is returned. Calling it again is harmless.

    Args:
        backend: process-group backend; default ``gloo`` on CPU, ``nccl`` with CUDA.

    Returns:
        This process's rank, the world size, its local rank and the backend used.

    Raises:
        ConfigError: the environment is incomplete or inconsistent.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    missing = [k for k in _ENV_KEYS if not os.environ.get(k)]
    if missing:
        msg = (
            f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with "
            "`torchrun --standalone --nproc_per_node N ...` which sets them all"
        )
        raise ConfigError(msg)
    if not dist.is_available():
        msg = "this torch build has no torch.distributed; run with WORLD_SIZE=1"
        raise ConfigError(msg)
    backend = backend or default_backend()
    dist.init_process_group(backend=backend, init_method="env://")
    info = current()
    logger.info("joined process group: rank %d of %d (%s)", info.rank, info.world_size, backend)
    return info


def is_initialized() -> bool:
    """True when this process belongs to a process group."""
    return dist.is_available() and dist.is_initialized()


def current() -> DistInfo:
    """Rank, world size, local rank and backend of this process (single process if no group)."""
    if not is_initialized():
        return DistInfo()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=_env_int("LOCAL_RANK", 0),
        backend=str(dist.get_backend()),
    )


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of replicas (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0: the process that logs, shows progress and writes files."""
    return get_rank() == 0


def barrier() -> None:
    """Wait until every replica gets here (no-op in a single process)."""
    if get_world_size() > 1:
        dist.barrier()


def all_reduce_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """Replace ``tensor`` in place by its mean over replicas and return it.

    Use it for data-dependent statistics (activation norms, gradient EMAs, losses) so that
    every replica takes the same decision. Integer tensors are summed then floor-divided.
    """
    world = get_world_size()
    if world > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        if tensor.is_floating_point() or tensor.is_complex():
            tensor.div_(world)
        else:
            tensor.floor_divide_(world)
    return tensor


def broadcast_object(obj: T, src: int = 0) -> T:
    """Return rank ``src``'s ``obj`` on every replica (picklable objects; no-op alone)."""
    if get_world_size() <= 1:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def consensus_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """Replace a float tensor in place by its mean over DDP replicas, bit-identical everywhere.

    ``all_reduce`` gives the mean; rank 0's result is then broadcast so that no replica can
    differ by a rounding of the reduction order. A no-op in a single process.
    """
    if get_world_size() > 1:
        all_reduce_mean_(tensor)
        dist.broadcast(tensor, src=0)
    return tensor


def consensus_mean(values: np.ndarray) -> np.ndarray:
    """:func:`consensus_mean_` of a NumPy array (as float64; a copy)."""
    t = torch.from_numpy(np.array(values, dtype=np.float64))
    return consensus_mean_(t).numpy()


def sync_buffers_(model: torch.nn.Module) -> None:
    """Make buffers identical on every replica: float ones averaged, others from rank 0.

    A DDP step broadcasts rank 0's buffers before the forward and each replica then updates
    its BN running statistics with its own batch, so replicas leave training with different
    statistics. Averaging them gives one estimate over all shards. No-op in a single process.
    """
    if get_world_size() <= 1:
        return
    with torch.no_grad():
        for buf in model.buffers():
            if buf.is_floating_point():
                consensus_mean_(buf)
            else:
                dist.broadcast(buf, src=0)


def cleanup() -> None:
    """Leave the process group if this process is in one (call at the end of a script).

    A barrier first: gloo aborts a replica (SIGABRT) whose peer closes its sockets while the
    replica is still finishing the last collective.
    """
    if is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def on_rank0(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 only; every replica returns its value or raises its error.

    A :class:`~tinyprune.errors.TinypruneError` raised on rank 0 is raised on the other ranks
    as the same class with the same message (so every process exits with the same code).
    Alone (no process group) this is just ``fn()``.
    """
    from tinyprune import errors

    if get_world_size() <= 1:
        return fn()
    payload: tuple[str, Any, str] = ("ok", None, "")
    error: errors.TinypruneError | None = None
    if is_main():
        try:
            payload = ("ok", fn(), "")
        except errors.TinypruneError as e:
            error, payload = e, ("error", type(e).__name__, str(e))
    payload = broadcast_object(payload, src=0)
    if payload[0] == "ok":
        return payload[1]  # type: ignore[no-any-return]
    if error is not None:
        raise error
    cls = getattr(errors, str(payload[1]), errors.TinypruneError)
    raise cls(payload[2])
