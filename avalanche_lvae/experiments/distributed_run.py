"""``avalanche-lvae run`` under ``torchrun``: the process group, the per-rank batch and rank-0-only outputs.

Launched by ``torchrun`` (the ``WORLD_SIZE`` and ``RANK`` variables are set),
the command joins the process group with Avalanche's
``DistributedHelper.init_distributed`` (gloo on CPU; nccl with ``--device
cuda``, on one machine only, as Avalanche puts rank r on ``cuda:r``) before
it builds the streams and the models, and every rank then trains the same
strategies in lockstep (:mod:`avalanche_lvae.distributed`
averages the gradients; the model is not wrapped in
``DistributedDataParallel``). What changes for the command:

- ``--batch-size`` is the global minibatch: each rank trains on
  ``batch_size // world_size`` rows (a size that does not divide is refused);
  evaluation runs on the whole test set on every rank, so every rank computes
  the same metrics and only rank 0 reports them;
- only rank 0 prints, shows progress bars, logs to TensorBoard, writes the
  results JSON, plots, sample grids and checkpoints (the other ranks' standard
  output is discarded); after each checkpoint all ranks wait at a barrier, and
  on resume every rank loads the same file (a checkpoint may be resumed by
  another number of processes with the same ``--batch-size``: a valid run,
  but not bit-identical to an uninterrupted one, whose ranks drew other
  random numbers);
- the reference classifier of the Frechet distance is trained (or loaded) by
  rank 0 first, so the others read its cache file instead of training it too;
- the results JSON's ``config`` records ``world_size``, ``global_batch`` and
  ``per_rank_batch``;
- only the LifelongVAE strategies (:data:`DISTRIBUTED_STRATEGIES`) run with
  more than one process: Avalanche's plugins of ``gr``, ``lwf`` and ``si``
  do not declare ``supports_distributed``.

In a single process (no ``torchrun``) every function here is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

import torch
from avalanche.distributed import DistributedHelper

from .strategies import GENERATIVE

__all__ = ["DISTRIBUTED_STRATEGIES", "launched_world_size", "check_distributed_arguments", "start", "finish",
           "is_main_process", "run_config", "quiet_unless_main", "errors_on_main_only", "main_process_first",
           "after_checkpoint", "drop_outputs_unless_main", "print_error"]

#: Strategies that train under ``torchrun`` (the LifelongVAE templates average the gradients themselves).
DISTRIBUTED_STRATEGIES = GENERATIVE


def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (1 without it), read before the process group exists."""
    if os.environ.get("RANK") is None or os.environ.get("WORLD_SIZE") is None:
        return 1
    return int(os.environ["WORLD_SIZE"])


def _launched_rank() -> int:
    return int(os.environ.get("RANK", "0")) if launched_world_size() > 1 else 0


def check_distributed_arguments(parser, args) -> None:
    """Refuse, through ``parser.error`` (exit code 2), flags that cannot run on ``WORLD_SIZE`` processes."""
    world = launched_world_size()
    if world == 1:
        return
    if args.batch_size % world:
        parser.error(f"argument --batch-size: the global batch {args.batch_size} does not divide among "
                     f"{world} processes; give a multiple of {world}")
    if torch.device(args.device).type == "cuda":
        # Avalanche 0.6's DistributedHelper puts rank r on cuda:r (the global rank), so every rank needs
        # its own device on the one machine.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if local != world:
            parser.error(f"argument --device {args.device}: Avalanche's DistributedHelper places rank r on cuda:r, "
                         f"which exists only on one machine; run the {world} processes on one machine, or use "
                         "--device cpu on several")
        if world > torch.cuda.device_count():
            parser.error(f"argument --device {args.device}: {world} processes need {world} GPUs (one each), this "
                         f"machine has {torch.cuda.device_count()}; lower --nproc_per_node")
    refused = [name for name in args.strategies if name not in DISTRIBUTED_STRATEGIES]
    if refused:
        parser.error(f"argument --strategies: {', '.join(refused)} cannot run under torchrun (Avalanche's plugins "
                     f"of these strategies do not support distributed training); run them in one process, or "
                     f"choose from {','.join(DISTRIBUTED_STRATEGIES)}")


def start(args) -> None:
    """Join the process group when launched by ``torchrun`` and set ``args.device`` to this rank's device.

    Avalanche's ``init_distributed`` seeds every generator of every rank with
    ``--seed`` and chooses gloo on CPU, nccl with ``--device cuda``, whose
    device is then ``cuda:<rank>`` (Avalanche's ``make_device``).
    """
    if launched_world_size() == 1 or DistributedHelper.is_distributed:
        return
    use_cuda = torch.device(args.device).type == "cuda"
    DistributedHelper.init_distributed(random_seed=args.seed, use_cuda=use_cuda)
    if use_cuda:
        args.device = str(DistributedHelper.make_device())


def finish() -> None:
    """Leave the process group (no-op in a single process)."""
    if DistributedHelper.is_distributed:
        torch.distributed.destroy_process_group()


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the process that reports and writes."""
    return DistributedHelper.is_main_process


def run_config(args) -> dict:
    """The entries the results JSON's ``config`` adds to the flags: world size, global and per-rank batch."""
    world = DistributedHelper.world_size
    return dict(world_size=world, global_batch=args.batch_size, per_rank_batch=args.batch_size // world)


@contextlib.contextmanager
def _discard(stream_name: str, discard: bool) -> Iterator[None]:
    if not discard:
        yield
        return
    with open(os.devnull, "w") as sink:
        redirect = contextlib.redirect_stdout if stream_name == "stdout" else contextlib.redirect_stderr
        with redirect(sink):
            yield


def quiet_unless_main() -> contextlib.AbstractContextManager:
    """Discard standard output on ranks other than 0 (their figures are rank 0's)."""
    return _discard("stdout", not DistributedHelper.is_main_process)


def errors_on_main_only() -> contextlib.AbstractContextManager:
    """Discard standard error of ranks other than 0 while the flags are checked (one error line, not N).

    Used before the process group exists, so the rank is read from ``RANK``.
    """
    return _discard("stderr", _launched_rank() != 0)


def main_process_first() -> contextlib.AbstractContextManager:
    """Rank 0 runs the block first, then the others (Avalanche's ``main_process_first``, which keeps
    every rank's random generators as they were); a plain block in a single process."""
    if not DistributedHelper.is_distributed:
        return contextlib.nullcontext()
    return DistributedHelper.main_process_first()


def after_checkpoint() -> None:
    """Every rank waits until rank 0 has written the checkpoint (no-op in a single process)."""
    DistributedHelper.barrier()


def drop_outputs_unless_main(strategy) -> None:
    """On ranks other than 0, remove the loggers and sample-grid folders a loaded checkpoint brought.

    Checkpoints are rank 0's, whose evaluator logs to TensorBoard and saves
    sample grids; on the other ranks these outputs would be written twice.
    """
    if DistributedHelper.is_main_process:
        return
    evaluator = strategy.evaluator
    for logger in evaluator.loggers:
        writer = getattr(logger, "writer", None)
        if writer is not None:
            writer.close()
    evaluator.loggers = []
    for metric in evaluator.metrics:
        if getattr(metric, "save_dir", None) is not None:
            metric.save_dir = None


def print_error(message: str) -> None:
    """Print ``error: message`` on standard error, on rank 0 only (every rank raises the same error)."""
    if DistributedHelper.is_main_process:
        print(f"error: {message}", file=sys.stderr)
