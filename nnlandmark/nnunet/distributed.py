"""Training on several GPUs with nnU-Net's own data-parallel path (``torch.distributed``).

nnU-Net trains on N GPUs by starting N processes (``nnunetv2.run.run_training.run_ddp``
under ``torch.multiprocessing.spawn``), one per GPU, joined in an NCCL process
group (``setup_ddp``); its trainer then notices the process group (``is_ddp``),
gives each process its share of the batch (``_set_batch_size_and_oversample``),
wraps the network in ``DistributedDataParallel``, gathers the losses and lets
rank 0 alone log and write checkpoints. :func:`spawn` does what ``run_ddp``
does around that, without its trainer lookup by name (see this package's
docstring): it starts the processes, sets up the group (nnU-Net's
``setup_ddp`` for NCCL), runs a function of ours in each and tears the group
down (``cleanup_ddp``). What our trainer adds on top is in
:class:`nnlandmark.nnunet.trainer.LandmarkTrainer`.

``backend="gloo"`` runs the same path on the CPU: nnU-Net's trainer assumes
CUDA under DDP, our trainer lifts that, so tests exercise the distributed code
on machines without GPUs. It is no way to train faster: the processes share the
CPU cores.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch
import torch.distributed as dist

BACKENDS = ("nccl", "gloo")


def spawn(function: Callable, args: tuple, world_size: int, backend: str = "nccl") -> None:
    """Run ``function(*args)`` in ``world_size`` new processes joined in one process group.

    Process ``rank`` uses GPU ``rank`` with NCCL (as nnU-Net's ``run_ddp``);
    ``function`` and ``args`` must be picklable (a module-level function, plain
    values). Returns when all processes have finished; an exception in one of
    them ends the others and is raised here (``torch.multiprocessing.ProcessRaisedException``).
    As in nnU-Net, the rendezvous is on this machine, at ``MASTER_PORT`` if set, else a free port.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    from nnunetv2.run.run_training import find_free_network_port
    import torch.multiprocessing as mp
    port = os.environ.get("MASTER_PORT") or str(find_free_network_port())
    mp.spawn(_process, args=(world_size, backend, port, function, args), nprocs=world_size, join=True)


def _process(rank: int, world_size: int, backend: str, port: str, function: Callable, args: tuple) -> None:
    # the rendezvous variables are set in this process only, not in the one that spawned it
    os.environ.setdefault("MASTER_ADDR", "localhost")
    os.environ["MASTER_PORT"] = port
    if rank != 0:
        # rank 0 speaks for all (progress bar, messages); nnU-Net prints per-process chatter.
        # Errors (stderr) still show.
        sys.stdout = open(os.devnull, "w")
    if backend == "nccl":
        from nnunetv2.run.run_training import setup_ddp
        torch.cuda.set_device(torch.device("cuda", rank))  # before the group, as nnU-Net's run_ddp
        setup_ddp(rank, world_size)
    else:
        # the processes share the cores; each would otherwise start a thread per core
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        function(*args)
        # every process done with its collectives before any tears the group down: a gloo
        # process whose peer destroyed the group mid-exchange aborts (seen: SIGABRT, "terminate
        # called without an active exception")
        dist.barrier()
    finally:
        from nnunetv2.run.run_training import cleanup_ddp
        cleanup_ddp()


def is_distributed() -> bool:
    """Whether this process is one of a process group (as nnU-Net's trainer decides ``is_ddp``)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def backend() -> str | None:
    return dist.get_backend() if is_distributed() else None


def from_rank_0(value):
    """Rank 0's ``value`` in every process (``value`` itself outside a process group): for decisions
    that every process must make alike, or the processes wait on each other for ever."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value) -> list:
    """Every process's ``value``, in rank order, in every process (``[value]`` outside a group)."""
    if not is_distributed():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    if is_distributed():
        dist.barrier()
