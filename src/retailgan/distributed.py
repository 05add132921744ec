"""Data-parallel training over processes with torch.distributed (gloo on CPU, NCCL on GPU).

The GAN trainers scale out with PyTorch's own engine, DistributedDataParallel: every process
holds a replica of the networks, takes its share of each global mini-batch, and DDP averages the
gradients across processes in the backward pass, so every replica takes the same optimiser step.
The global batch size stays the model's ``batch_size`` whatever the process count, so a run on N
processes follows the same optimisation path as one process (up to the random draws each process
makes for its share: masks and noise), and the quality matches within noise.

Two ways to start:

* ``retailgan train --nproc N ...`` spawns N local processes (:func:`launch`);
* ``torchrun --nproc-per-node N -m retailgan train ...`` (or across machines with
  ``--nnodes``/``--rdzv-endpoint``): the command sees torchrun's environment (``RANK``,
  ``WORLD_SIZE``, ``MASTER_ADDR``...) and joins the process group (:func:`init_from_env`).

Only rank 0 writes files and shows progress; validation scores are computed on rank 0 and
broadcast, so early-stopping decisions agree on every rank.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from retailgan.errors import ConfigError, RetailganError


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def torchrun_env() -> bool:
    """True when started by torchrun (or another launcher that sets the env:// variables)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def default_backend(device: str = "cpu") -> str:
    return "nccl" if device.startswith("cuda") and dist.is_nccl_available() else "gloo"


def init_from_env(device: str = "cpu") -> None:
    """Join the process group described by torchrun's environment variables."""
    if not dist.is_initialized():
        dist.init_process_group(default_backend(device), init_method="env://")


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when running distributed, else itself."""
    if not is_distributed():
        return module
    device_ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This process's share of a global mini-batch (contiguous, sizes differ by at most one)."""
    if not is_distributed():
        return batch
    n = world_size()
    if len(batch) < n:
        raise ConfigError(f"a mini-batch of {len(batch)} rows cannot be shared by {n} processes")
    return torch.tensor_split(batch, n)[rank()]


def generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(order, draws): the generator of the mini-batch order, the same on every process, and the
    generator of each process's own random draws (masks, noise). One process: one generator for
    both, so a single-process run draws exactly what it drew before distributed training existed."""
    draws = torch.Generator(device=device).manual_seed(seed + 7919 * rank())
    if not is_distributed():
        return draws, draws
    return torch.Generator(device=device).manual_seed(seed), draws


def broadcast_float(value: float) -> float:
    """Rank 0's ``value`` on every rank."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(local_rank: int, world: int, port: int, fn: Callable[..., Any], args: Sequence[Any]) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(local_rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(world),
        }
    )
    dist.init_process_group("gloo", init_method="env://")
    try:
        fn(*args)
        # Leave together: a process that tears down its connections while a peer is still
        # working (rank 0 saving the model) can make gloo abort that peer.
        # If a peer failed, the barrier fails too; the peer's own error is what launch() reports.
        with contextlib.suppress(RuntimeError):
            dist.barrier()
    finally:
        # DDP wrappers left in reference cycles hold the process group; free them while it is
        # still alive rather than during interpreter shutdown.
        gc.collect()
        dist.destroy_process_group()
    # The work is done and its files are closed. Leave without interpreter shutdown: tearing down
    # gloo's threads there has aborted a worker ("terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(nproc: int, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in ``nproc`` local processes joined in a gloo process group.

    ``fn`` and its arguments must be picklable (a module-level function). An exception in any
    process ends all of them and is raised here.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    import torch.multiprocessing as mp

    for attempt in range(3):
        try:
            mp.start_processes(
                _worker, args=(nproc, _free_port(), fn, args), nprocs=nproc, join=True, start_method="spawn"
            )
            return
        except mp.ProcessRaisedException as exc:
            # The free port can be taken by another program between our probe and the rendezvous.
            if "address already in use" in str(exc).lower() and attempt < 2:
                continue
            # A retailgan error in a worker (bad data, bad config) reaches the user as one clear line.
            last = str(exc).strip().splitlines()[-1]
            if last.startswith("retailgan.errors."):
                raise RetailganError(f"process {exc.error_index}: {last.partition(': ')[2]}") from None
            raise
