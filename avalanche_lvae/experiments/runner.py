"""Train one strategy experience by experience, evaluate, checkpoint, and collect its results.

After each experience ``i`` the strategy is evaluated on ``test_stream[: i + 1]``
(every test set seen so far); the numbers come from the metrics of its
``EvaluationPlugin`` (see :mod:`avalanche_lvae.experiments.strategies`), read
with :func:`metric_value` from the dict that ``strategy.eval`` returns:

- ``Top1_Acc_Stream`` / ``Top1_Acc_Exp`` / ``StreamForgetting`` (Avalanche),
- ``NegELBO_Stream/eval_phase/test_stream/Task000`` (nats per image, all seen
  test images pooled) for the LifelongVAE strategies,
- ``FrechetDistance_Stream/eval_phase/test_stream/Task000`` when a reference
  classifier is given.

Test hook (not a flag, used by ``tests/test_reliability.py``): with the
environment variable ``LVAE_RUN_CRASH_AT=<experience>`` (or
``<strategy>:<experience>``, 0-based) the process ends with
``os._exit(CRASH_EXIT_CODE)`` right after the first weight update of that
experience, i.e. like a ``kill -9`` in the middle of it: the state in memory
is ahead of the last checkpoint, which must be all that a resume needs.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from typing import Dict, List, Optional

from avalanche_lvae.avalanche_fixes import synaptic_intelligence_weight_copies

from . import distributed_run
from .checkpoints import StrategyCheckpoints, resume_config
from .strategies import make_strategy

__all__ = ["run_strategy", "new_progress", "metric_value", "accuracy_row", "CRASH_ENV_VAR", "CRASH_EXIT_CODE",
           "ACC_STREAM", "ACC_EXP", "FORGETTING", "NEG_ELBO", "FRECHET", "PURITY"]

CRASH_ENV_VAR = "LVAE_RUN_CRASH_AT"
CRASH_EXIT_CODE = 75

# Key prefixes of the values ``strategy.eval`` returns (Avalanche's and the package's metrics).
ACC_STREAM = "Top1_Acc_Stream/eval_phase/test_stream"
ACC_EXP = "Top1_Acc_Exp/eval_phase/test_stream/"
FORGETTING = "StreamForgetting/eval_phase/test_stream"
NEG_ELBO = "NegELBO_Stream/eval_phase/test_stream"
FRECHET = "FrechetDistance_Stream/eval_phase/test_stream"
PURITY = "ComponentPurity_Stream/eval_phase/test_stream"


def metric_value(metrics: Dict[str, float], prefix: str, suffix: str = "", required: bool = True) -> Optional[float]:
    """The one value of ``metrics`` whose key starts with ``prefix`` and ends with ``suffix``."""
    found = [v for k, v in metrics.items() if k.startswith(prefix) and k.endswith(suffix)]
    if not found and not required:
        return None
    if len(found) != 1:
        raise KeyError(f"expected one metric {prefix}*{suffix}, found {len(found)} in {sorted(metrics)}")
    return float(found[0])


def accuracy_row(metrics: Dict[str, float], n_experiences: int) -> List[float]:
    """The accuracy on each of the first ``n_experiences`` test experiences, from one ``strategy.eval``."""
    return [metric_value(metrics, ACC_EXP, f"/Exp{j:03d}") for j in range(n_experiences)]


def _crash_experience(name: str) -> Optional[int]:
    """The experience index at which the test hook should end the process, or None."""
    spec = os.environ.get(CRASH_ENV_VAR, "").strip()
    if not spec:
        return None
    target, _, index = spec.rpartition(":")
    return int(index) if target in ("", name) else None


def _arm_crash(strategy) -> None:
    from avalanche.core import SupervisedPlugin

    class _Crash(SupervisedPlugin, supports_distributed=True):
        def after_training_iteration(self, strategy, **kwargs):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(CRASH_EXIT_CODE)

    # Appended only now: the plugin is never part of a checkpoint.
    strategy.plugins.append(_Crash())


def _reset_frechet_features(strategy) -> None:
    """Drop the reference features the Frechet metric keeps after emitting its value.

    They are only needed inside one ``eval`` call (the metric resets at the
    next one anyway), but would otherwise stay in memory and in every
    checkpoint: 10k x 128 floats per seen test set.
    """
    from avalanche_lvae.metrics import FrechetDistancePluginMetric

    for metric in getattr(strategy.evaluator, "metrics", []):
        if isinstance(metric, FrechetDistancePluginMetric):
            metric.reset()


def _is_cumulative(strategy) -> bool:
    from avalanche.training import Cumulative

    return isinstance(strategy, Cumulative)


def _cumulative_dataset(benchmark, n_done: int):
    """The training data ``Cumulative`` has accumulated after ``n_done`` experiences, rebuilt on resume.

    Built by the same successive ``concat_datasets`` calls as
    ``Cumulative.train_dataset_adaptation``, so sample order (and hence the
    shuffled minibatches) are identical; not pickling it keeps the
    checkpoints of ``cumulative`` as small as the others' (the full permuted
    MNIST stream would add 188 MB per experience).
    """
    from avalanche.benchmarks.utils import concat_datasets

    dataset = None
    for i in range(n_done):
        experience_data = benchmark.train_stream[i].dataset
        dataset = experience_data if dataset is None else concat_datasets([dataset, experience_data])
    return dataset


def _record(progress: dict, metrics: Dict[str, float], i: int, generative: bool, has_fd: bool) -> dict:
    """Append the numbers of ``strategy.eval`` after experience ``i`` to ``progress``; returns the bar's postfix."""
    progress["avg_accuracy"].append(metric_value(metrics, ACC_STREAM))
    progress["forgetting"].append(metric_value(metrics, FORGETTING, required=False))
    progress["accuracy_rows"].append(accuracy_row(metrics, i + 1))
    postfix = {"acc": f"{progress['avg_accuracy'][-1]:.3f}"}
    if generative:
        progress["neg_elbo"].append(metric_value(metrics, NEG_ELBO))
        postfix["-elbo"] = f"{progress['neg_elbo'][-1]:.1f}"
    if has_fd:
        progress["frechet"].append(metric_value(metrics, FRECHET))
        postfix["fd"] = f"{progress['frechet'][-1]:.1f}"
        purity = metric_value(metrics, PURITY, required=False)
        if purity is not None:  # lvae only
            progress.setdefault("purity", []).append(purity)
    return postfix


def _purity_per_row(strategy) -> Optional[List[float]]:
    """The last evaluation's purity of each sample-grid row (z_d value), or None without the purity metric."""
    from avalanche_lvae.metrics.purity import ComponentPurityPluginMetric

    for metric in getattr(strategy.evaluator, "metrics", []):
        if isinstance(metric, ComponentPurityPluginMetric) and metric.per_component:
            return list(metric.per_component)
    return None


def new_progress(name: str, config: dict) -> dict:
    """The per-experience history of one strategy (stored inside each checkpoint)."""
    return dict(strategy=name, config=resume_config(config), experiences_done=0, resumed_after=None,
                avg_accuracy=[], forgetting=[], accuracy_rows=[], neg_elbo=[], frechet=[], train_seconds=0.0)


def run_strategy(name: str, benchmark, args, config: dict, n_classes: int, reference=None,
                 progress_bar: bool = True, kind: Optional[str] = None) -> dict:
    """Train ``name`` on ``benchmark.train_stream``, evaluating (and checkpointing) after every experience.

    ``name`` is the strategy of :mod:`~avalanche_lvae.experiments.strategies`,
    or with ``kind`` a label of a variant of strategy ``kind`` (e.g. an
    ablation's ``lvae`` built from other flags ``args``): the label names
    its checkpoint folder, its grids folder and its progress bar.

    With ``args.checkpoint_dir`` the strategy first resumes from its newest
    checkpoint in ``<checkpoint_dir>/<name>`` (if any): model, optimizer,
    teacher, metric state, RNG state and the history of the experiences
    already done. Returns the strategy's entry of the results JSON.

    Under ``torchrun`` (:mod:`~avalanche_lvae.experiments.distributed_run`)
    every rank trains and evaluates; rank 0 alone writes the checkpoints and
    the others wait for each one at a barrier; on resume every rank loads the
    same file onto its device.
    """
    from tqdm import tqdm

    main_process = distributed_run.is_main_process()
    tb_dir = None if args.tensorboard is None or not main_process else os.path.join(args.tensorboard, name)
    strategy, generative = make_strategy(kind or name, args, n_classes, reference, tb_dir, plots_name=name)
    progress = new_progress(name, config)
    checkpoints = None
    if args.checkpoint_dir is not None:
        checkpoints = StrategyCheckpoints(os.path.join(args.checkpoint_dir, name))
        loaded = checkpoints.load_latest(strategy, args.device, config, name)
        if loaded is not None:
            strategy, progress = loaded
            distributed_run.drop_outputs_unless_main(strategy)
            progress["resumed_after"] = progress["experiences_done"] - 1
            if _is_cumulative(strategy):
                strategy.dataset = _cumulative_dataset(benchmark, progress["experiences_done"])
            # --lr may differ from the checkpoint's (e.g. lower after a divergence).
            for group in strategy.optimizer.param_groups:
                group["lr"] = args.lr
            # The number of processes sharing --batch-size may differ from the checkpoint's.
            strategy.train_mb_size = args.batch_size // distributed_run.launched_world_size()
    has_fd = generative and reference is not None
    start = progress["experiences_done"]
    n_exp = len(benchmark.train_stream)
    crash_at = _crash_experience(name)
    bar = tqdm(total=n_exp, initial=start, desc=f"{name:>10}", unit="exp", disable=not progress_bar,
               file=sys.stderr, leave=True)
    try:
        for i in range(start, n_exp):
            if crash_at == i:
                _arm_crash(strategy)
            began = time.perf_counter()
            with synaptic_intelligence_weight_copies() if (kind or name) == "si" else contextlib.nullcontext():
                strategy.train(benchmark.train_stream[i])
            progress["train_seconds"] += time.perf_counter() - began
            metrics = strategy.eval(benchmark.test_stream[: i + 1])
            _reset_frechet_features(strategy)
            postfix = _record(progress, metrics, i, generative, has_fd)
            purity_rows = _purity_per_row(strategy)
            if purity_rows is not None:
                progress.setdefault("purity_row_history", []).append(purity_rows)
            progress["experiences_done"] = i + 1
            if checkpoints is not None:
                if main_process:
                    checkpoints.save(strategy, progress, i, exclude=("dataset",) if _is_cumulative(strategy) else ())
                distributed_run.after_checkpoint()
            bar.update(1)
            bar.set_postfix(postfix)
    finally:
        bar.close()  # ends the bar's line, so that an error message starts on its own line
    return {
        "final_avg_accuracy": progress["avg_accuracy"][-1],
        "final_avg_forgetting": progress["forgetting"][-1],
        "avg_accuracy_per_experience": progress["avg_accuracy"],
        "accuracy_per_experience": progress["accuracy_rows"],
        "final_neg_elbo": progress["neg_elbo"][-1] if generative else None,
        "neg_elbo_per_experience": progress["neg_elbo"] if generative else None,
        "final_frechet_distance": progress["frechet"][-1] if has_fd else None,
        "frechet_distance_per_experience": progress["frechet"] if has_fd else None,
        "final_component_purity": progress["purity"][-1] if progress.get("purity") else None,
        "component_purity_per_experience": progress.get("purity") or None,
        "final_component_purity_per_row": (progress["purity_row_history"][-1]
                                           if progress.get("purity_row_history") else None),
        "component_purity_per_row_per_experience": progress.get("purity_row_history"),
        "train_seconds": progress["train_seconds"],
        # Process-wide peak so far: it includes every strategy run before this one.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "resumed_after_experience": progress["resumed_after"],
    }
