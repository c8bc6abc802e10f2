"""Processes and devices: DistributedDataParallel from `torchrun`, rank-0 guards, the data order.

`torchrun --nproc_per_node=N -m densemtl_lab train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK in their environment; `init_from_env` joins them into one group (NCCL on GPUs, gloo on
CPUs). Without those variables everything here degrades to a single process. The training order is
a pure function of (seed, step): each pass over the data is a permutation seeded by (seed, epoch),
cut to whole global batches (drop_last) and dealt out to the ranks, so a resumed run continues with
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from densemtl_lab.runtime import select_device


@dataclass(frozen=True)
class ProcessContext:
    """Where this process stands in a (possibly one-process) group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0


def init_from_env(device_preference: str = "auto") -> ProcessContext:
    """Join the process group that torchrun describes in the environment (a no-op without it)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessContext()
    context = ProcessContext(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")),
                             int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))))
    if not dist.is_initialized():
        uses_cuda = select_device(device_preference).type == "cuda"
        dist.init_process_group("nccl" if uses_cuda else "gloo")
    return context


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def process_device(context: ProcessContext, preference: str = "auto") -> torch.device:
    """The device of this process: the chosen one, on CUDA the GPU of its local rank."""
    device = select_device(preference)
    if device.type == "cuda" and device.index is None:  # set_device needs an index ("cuda" has none)
        device = torch.device("cuda", context.local_rank if context.enabled else torch.cuda.current_device())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def all_reduce_mean(values: torch.Tensor, context: ProcessContext) -> torch.Tensor:
    """The mean of `values` over the processes (in place; unchanged with one process)."""
    if context.enabled:
        dist.all_reduce(values)
        values /= context.world_size
    return values


def all_reduce_mean_together(tensors: Sequence[torch.Tensor], context: ProcessContext) -> None:
    """The mean over the processes of each tensor, in place, through one all-reduce of their concatenation."""
    if context.enabled and tensors:
        flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
        all_reduce_mean(flat, context)
        for tensor, values in zip(tensors, flat.split([tensor.numel() for tensor in tensors])):
            tensor.copy_(values.view_as(tensor))


def all_reduce_sum(tensors: Iterable[torch.Tensor], context: ProcessContext) -> None:
    """Sum each tensor over the processes, in place (e.g. the metrics' sufficient statistics)."""
    if context.enabled:
        for tensor in tensors:
            dist.all_reduce(tensor)


def average_gradients(parameters: Iterable[torch.nn.Parameter], context: ProcessContext) -> None:
    """Average the gradients of parameters that DDP does not own (the loss-weighting ones)."""
    if context.enabled:
        for parameter in parameters:
            if parameter.grad is not None:
                all_reduce_mean(parameter.grad, context)


def broadcast_buffers(module: torch.nn.Module, context: ProcessContext) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics), as DDP does before each forward.

    Each rank updates its running statistics on its own batches; call this before evaluating or
    handing the model back so that all ranks hold the same model.
    """
    if context.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


class EpochSampler(Sampler[int]):
    """This rank's indices for one pass: a (seed, epoch) permutation cut to whole global batches.

    `set_position(epoch, skip)` chooses the pass and how many of this rank's batches to skip
    (a resumed run starts in the middle of a pass).
    """

    def __init__(self, length: int, batch_size: int, seed: int,
                 context: ProcessContext = ProcessContext()) -> None:
        self.length, self.batch_size, self.seed, self.context = length, batch_size, seed, context
        self.batches_per_epoch = length // (batch_size * context.world_size)
        if self.batches_per_epoch < 1:
            raise ValueError(f"the training split has {length} samples, fewer than one batch of "
                             f"train.batch_size={batch_size} x {context.world_size} process(es); "
                             "lower the batch size or use more data")
        self.epoch, self.skip = 0, 0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
        used = order[: self.batches_per_epoch * self.batch_size * self.context.world_size]
        mine = used[self.context.rank::self.context.world_size]
        return iter(mine[self.skip * self.batch_size:].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip) * self.batch_size


class ShardSampler(Sampler[int]):
    """Evaluation: every index once over all ranks, in order (rank r gets r, r + N, ...)."""

    def __init__(self, length: int, context: ProcessContext = ProcessContext()) -> None:
        self.indices = list(range(context.rank, length, context.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
