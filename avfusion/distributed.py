"""torch.distributed helpers: one process per GPU (NCCL) or per CPU worker (gloo).

A job is distributed when the environment says so (`WORLD_SIZE` > 1 with `RANK`, as set by
torchrun, submitit's `JobEnvironment` via `avfusion.launch`, or a test that spawns processes):

    init_distributed()            # no-op for a single process
    rank, world = get_rank(), get_world_size()
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(device: str = "cpu") -> bool:
    """Initialise the default process group from RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT.

    Backend: NCCL for CUDA, gloo for CPU. Returns True when a group is (now) initialised.
    """
    if is_distributed():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but environment variables {missing} are not set")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, rank=int(os.environ["RANK"]), world_size=world)
    return True


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (N, ...) from every rank along dim 0 (same N on every rank)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_gather_objects(obj) -> list:
    """A picklable object from every rank, as a list indexed by rank."""
    if not is_distributed():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(value: float) -> float:
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.item() / get_world_size()


def barrier() -> None:
    if is_distributed():
        dist.barrier()
