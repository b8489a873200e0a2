"""Data-parallel training across processes with Avalanche's ``DistributedHelper``.

Launch with ``torchrun --nproc_per_node=N`` (or ``torch.multiprocessing``
with the ``LOCAL_RANK``/``RANK``/``WORLD_SIZE``/``MASTER_*`` variables set)
and call ``DistributedHelper.init_distributed(seed)`` before building the
model: every rank then builds the same model from the same seed. The LVAE
templates (:class:`~avalanche_lvae.training.LVAETemplateMixin`) do the rest
through the functions below; in a single process each of them is a no-op.

- Each rank trains on its shard of every minibatch (the templates' loader
  shards by rank as ``DistributedSampler`` does) and the gradients are
  averaged across ranks before every update (:func:`average_gradients`), as
  ``DistributedDataParallel`` does. The model is not wrapped in
  ``DistributedDataParallel``: the plugins call the student's ``encode``,
  ``decode`` and ``sample_latent`` outside ``forward`` (L_I, replay) and
  ``grow_discrete`` replaces layers, neither of which a DDP wrapper allows.
- Random numbers: outside a training epoch (initialisation, z_d growth,
  the teacher swap, evaluation) every rank draws from the same stream
  (Avalanche seeds all ranks alike), so those steps stay in lockstep. A
  training epoch runs on a rank-dependent stream
  (:func:`rank_random_stream`): each rank generates its own replay, Gumbel
  and Gaussian noise and L_I samples, so the ranks do not replay the same
  images. With batch composition each rank replaces floor(b k/(k+1)) of its
  b rows, so the global real share is the single-process one at batch b.
- BatchNorm normalises each rank's shard with its own statistics (as DDP
  without SyncBatchNorm); the running statistics are averaged across ranks
  at the end of every epoch (:func:`sync_buffers`), so evaluation and the
  teacher copied from the student are the same on every rank.
- The non-finite guard's checks are collective (:func:`merge_across_ranks`):
  every rank raises the same ``NonFiniteLossError`` at the same iteration.
- :func:`replica_digest` hashes a model's weights and buffers, to compare ranks.
"""

import contextlib
import hashlib
import socket
from typing import Dict, Iterator, List, Tuple

import torch
import torch.distributed as dist
from avalanche.distributed import DistributedHelper
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "free_local_port",
    "world_size",
    "rank",
    "shared_seed",
    "rank_random_stream",
    "shared_random_stream",
    "average_gradients",
    "sync_buffers",
    "merge_across_ranks",
    "replica_digest",
    "check_replicas_identical",
]


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return DistributedHelper.world_size


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return DistributedHelper.rank


def shared_seed() -> int:
    """A seed drawn from the global generator: the same on every rank when called outside a training epoch."""
    return int(torch.randint(0, 2**31 - 1, (1,)))


_IN_RANK_STREAM = [False]


@contextlib.contextmanager
def rank_random_stream(device) -> Iterator[None]:
    """Run a block on a random stream that depends on the rank (no-op in a single process).

    Draws one seed from the shared stream (so the shared stream advances
    alike on every rank), forks torch's generators, seeds them with
    ``seed * world_size + rank``, and restores the shared state afterwards.
    """
    if not DistributedHelper.is_distributed:
        yield
        return
    seed = shared_seed()
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed * DistributedHelper.world_size + DistributedHelper.rank)
        _IN_RANK_STREAM[0] = True
        try:
            yield
        finally:
            _IN_RANK_STREAM[0] = False


@contextlib.contextmanager
def shared_random_stream() -> Iterator[None]:
    """Inside :func:`rank_random_stream`, run a block (an evaluation) on a stream shared by all ranks."""
    if not (DistributedHelper.is_distributed and _IN_RANK_STREAM[0]):
        yield
        return
    # The rank streams differ, so the shared seed is rank 0's, broadcast.
    seed = DistributedHelper.broadcast_object(shared_seed())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _IN_RANK_STREAM[0] = False
        try:
            yield
        finally:
            _IN_RANK_STREAM[0] = True


def _flat_all_reduce_mean(tensors: List[torch.Tensor]) -> None:
    """Replace each tensor by its mean across ranks, in one collective."""
    if not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= DistributedHelper.world_size
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def average_gradients(model: nn.Module) -> None:
    """Average every parameter's gradient across ranks (what ``DistributedDataParallel`` does), in one all-reduce.

    Every rank runs the same code on the same model, so the same parameters
    have gradients on every rank; a parameter without a gradient is left alone.
    """
    if not DistributedHelper.is_distributed:
        return
    _flat_all_reduce_mean([p.grad for p in model.parameters() if p.grad is not None])


def sync_buffers(model: nn.Module) -> None:
    """Average BatchNorm running statistics across ranks (no-op in a single process).

    Every rank normalised its own shard; the average of the ranks' running
    means and variances is what a single process would have tracked over the
    union, up to the variance of the shard means. All-reduce gives every rank
    the same bytes, so the replicas stay bit-identical.
    """
    if not DistributedHelper.is_distributed:
        return
    stats = []
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats and module.running_mean is not None:
            stats += [module.running_mean, module.running_var]
    _flat_all_reduce_mean(stats)


def merge_across_ranks(tripped: List[Tuple[str, int]]) -> List[Tuple[str, int]]:
    """Union of every rank's ``(name, first iteration)`` records, earliest first (one collective when distributed)."""
    if not DistributedHelper.is_distributed:
        return tripped
    first: Dict[str, int] = {}
    for records in DistributedHelper.gather_all_objects(tripped):
        for name, iteration in records:
            first[name] = min(iteration, first.get(name, iteration))
    return sorted(first.items(), key=lambda item: item[1])


def replica_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model``, by name (bit-exact)."""
    digest = hashlib.sha256()
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_replicas_identical(model: nn.Module, what: str = "model") -> str:
    """Raise ``RuntimeError`` unless ``model`` is bit-identical on every rank; return its digest."""
    mine = replica_digest(model)
    if DistributedHelper.is_distributed:
        digests = DistributedHelper.gather_all_objects(mine)
        if len(set(digests)) != 1:
            raise RuntimeError(
                f"the {what} differs across ranks (digests {digests}); every rank must build the model after "
                "DistributedHelper.init_distributed(seed) and train with the same arguments."
            )
    return mine


def free_local_port() -> int:
    """A free TCP port on 127.0.0.1, for a process group spawned on this machine (``mp.spawn``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
