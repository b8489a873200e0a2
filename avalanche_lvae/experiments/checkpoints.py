"""Per-strategy checkpoints of ``avalanche-lvae run``: atomic, two kept, with the run's history inside.

``--checkpoint-dir DIR`` makes every strategy save itself after every
experience as ``DIR/<strategy>/ckpt_exp<i>.pkl`` (``i`` = index of the last
completed experience) with Avalanche's own ``save_checkpoint``, which pickles
the whole strategy (model, optimizer, teacher, plugins, metric state, clock)
together with the state of every random generator (``RNGManager``). Loading
goes through Avalanche's ``maybe_load_checkpoint``, which restores the
generators as well, so a resumed run continues bit for bit like one that was
never interrupted.

Why the details:

- the file is written to a temporary name in the same folder, flushed to
  disk and renamed with ``os.replace``: a crash while writing leaves the
  previous checkpoint intact and never a half-written ``ckpt_exp*.pkl``;
- the two newest checkpoints are kept, so that if the newest is damaged (a
  disk problem, a copy cut short) the error can point at the previous one;
- the per-experience history (accuracies, ELBOs, Frechet distances, training
  seconds) rides inside the pickle as ``strategy.run_progress``, so the
  checkpoint and the history can never disagree and the final results JSON
  of a resumed run is complete;
- the run's flags are stored too and must match on resume: the pickled
  evaluator carries ``--plots`` / ``--tensorboard`` / ``--fd-samples``, and
  the model and stream depend on the rest. Only the flags in
  :data:`MAY_DIFFER_ON_RESUME` may change (``--lr`` is then applied to the
  restored optimizer, e.g. to continue with a lower rate after a divergence).

``torch.load`` defaults to ``weights_only=True`` since PyTorch 2.6, but only
when no ``pickle_module`` is given; Avalanche passes ``pickle_module=dill``,
which selects full unpickling. Load checkpoints only from folders you trust.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from typing import List, Optional, Sequence, Tuple

__all__ = ["CheckpointError", "StrategyCheckpoints", "MAY_DIFFER_ON_RESUME", "resume_config"]

#: Flags that name places or that are applied after loading; every other flag must match the checkpoint's.
MAY_DIFFER_ON_RESUME = ("results_json", "checkpoint_dir", "strategies", "lr", "dataset_root",
                        # the global batch must match; the number of processes sharing it may change
                        "world_size", "per_rank_batch", "global_batch")
_FILE = re.compile(r"^ckpt_exp(\d+)\.pkl$")
_KEEP = 2
# Per-minibatch leftovers of the last evaluation: not needed to resume, and
# the last LVAEOutput holds a whole minibatch of images and reconstructions.
_EXCLUDE = ("lvae_output", "replay_batch")


class CheckpointError(Exception):
    """A checkpoint cannot be used (damaged, or written by a run with other flags)."""


def resume_config(config: dict) -> dict:
    """The flags a checkpoint must share with the run that resumes it."""
    return {k: v for k, v in config.items() if k not in MAY_DIFFER_ON_RESUME}


class StrategyCheckpoints:
    """The checkpoints of one strategy in ``folder`` (created at the first save)."""

    def __init__(self, folder: str):
        self.folder = folder

    def files(self) -> List[Tuple[int, str]]:
        """``(experience index, path)`` of every checkpoint, oldest first."""
        if not os.path.isdir(self.folder):
            return []
        found = [(int(m.group(1)), os.path.join(self.folder, name))
                 for name in os.listdir(self.folder) if (m := _FILE.match(name))]
        return sorted(found)

    def save(self, strategy, progress: dict, experience_index: int, exclude: Sequence[str] = ()) -> str:
        """Atomically write the checkpoint after experience ``experience_index``; keep the newest two.

        ``exclude`` names further strategy attributes not to save (the caller rebuilds them on resume).
        """
        from avalanche.checkpointing import save_checkpoint

        import avalanche_lvae  # noqa: F401  (its import makes torch optimizers picklable by dill)

        os.makedirs(self.folder, exist_ok=True)
        final = os.path.join(self.folder, f"ckpt_exp{experience_index:03d}.pkl")
        strategy.run_progress = progress
        fd, tmp = tempfile.mkstemp(prefix=".tmp-ckpt_", suffix=".pkl", dir=self.folder)
        os.close(fd)
        try:
            save_checkpoint(strategy, tmp, exclude=[a for a in (*_EXCLUDE, *exclude) if hasattr(strategy, a)])
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())  # the data are on disk before the rename makes them visible
            os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        for _, old in self.files()[:-_KEEP]:
            os.unlink(old)
        return final

    def load_latest(self, strategy, device, config: dict, name: str) -> Optional[Tuple[object, dict]]:
        """Restore ``strategy`` (and every RNG) from the newest checkpoint; None when there is none.

        Returns ``(strategy, progress)``. Raises :class:`CheckpointError` naming
        the file when it cannot be read or belongs to another run.
        """
        from avalanche.checkpointing import maybe_load_checkpoint

        import avalanche_lvae  # noqa: F401  (its import makes torch optimizers picklable by dill)

        for leftover in os.listdir(self.folder) if os.path.isdir(self.folder) else []:
            if leftover.startswith(".tmp-ckpt_"):  # a save interrupted before its rename
                with contextlib.suppress(FileNotFoundError):  # under torchrun every rank cleans up
                    os.unlink(os.path.join(self.folder, leftover))
        files = self.files()
        if not files:
            return None
        index, path = files[-1]
        previous = files[-2][1] if len(files) > 1 else None
        fallback = (f"delete it to resume from the previous checkpoint {previous}" if previous else
                    f"delete it (or the folder {self.folder}) to start this strategy over")
        try:
            # maybe_load_checkpoint prints "Mapping cpu to cpu" for each device.
            with contextlib.redirect_stdout(io.StringIO()):
                strategy, exp_counter = maybe_load_checkpoint(strategy, path, map_location=device)
        except Exception as exc:  # torch/zip/pickle errors of a truncated or damaged file
            raise CheckpointError(f"checkpoint {path} is damaged or truncated and cannot be loaded "
                                  f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); {fallback}.") from None
        progress = getattr(strategy, "run_progress", None)
        if not isinstance(progress, dict) or progress.get("strategy") != name:
            raise CheckpointError(f"checkpoint {path} was not written by avalanche-lvae run for strategy {name!r}; "
                                  f"{fallback}.")
        if exp_counter != index + 1 or progress["experiences_done"] != index + 1:
            raise CheckpointError(f"checkpoint {path} holds {exp_counter} trained experiences, its name says "
                                  f"{index + 1}; {fallback}.")
        expected, saved = resume_config(config), progress["config"]
        diff = sorted(k for k in set(expected) | set(saved) if expected.get(k) != saved.get(k))
        if diff:
            flags = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} (now {expected.get(k)!r})" for k in diff)
            raise CheckpointError(f"checkpoint {path} was written with other flags: {flags}; rerun with the "
                                  f"same flags, or start over with another --checkpoint-dir.")
        return strategy, progress
