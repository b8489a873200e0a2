"""The results of ``avalanche-lvae run``: the printed table and the ``--results-json`` file.

``--results-json`` gets::

    {"benchmark": "permuted_mnist" | "split_fmnist" | "split_mnist",
     "config": {every flag, and "world_size": processes (1 without torchrun),
                "global_batch": --batch-size, "per_rank_batch": global_batch // world_size},
     "reference_classifier": null | {"name", "test_accuracy", "test_accuracy_per_experience",
                                     "epochs", "n_train", "train_seconds", "cache_file"},
     "results": {STRATEGY: {
        "final_avg_accuracy": float,          # Top1_Acc_Stream after the last experience
        "final_avg_forgetting": float,        # StreamForgetting after the last experience
        "avg_accuracy_per_experience": [float],  # Top1_Acc_Stream over the seen tests, after each exp
        "accuracy_per_experience": [[acc on exp j after training exp i, j <= i] for i],
        "final_neg_elbo": float | null,       # NegELBO_Stream (nats/image, seen test sets); null for gr/lwf/si
        "neg_elbo_per_experience": [float] | null,
        "final_frechet_distance": float | null,  # FrechetDistance_Stream; null for gr/lwf/si and --no-frechet
        "frechet_distance_per_experience": [float] | null,
        "final_component_purity": float | null,  # ComponentPurity_Stream (lvae only; needs the reference)
        "component_purity_per_experience": [float] | null,
        "final_component_purity_per_row": [float] | null,  # last evaluation, one value per grid row (z_d value)
        "component_purity_per_row_per_experience": [[float]] | null,  # the same after each experience
        "train_seconds": float,               # wall time inside strategy.train() only (summed over resumes)
        "peak_rss_mb": float,                 # process peak so far (includes earlier strategies)
        "resumed_after_experience": int | null}}}  # the checkpoint this run resumed from, if any

``config`` holds every flag; the lifelong model's flags are null where they
were not given (the library's default applied).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Dict

__all__ = ["format_table", "write_json_atomic"]


def format_table(results: Dict[str, dict]) -> str:
    """One row per strategy: final accuracy, forgetting, -ELBO, FD, training seconds, peak RSS."""
    head = (f"{'strategy':<11} {'avg acc':>8} {'forgetting':>10} {'-ELBO':>8} {'FD':>8} "
            f"{'train s':>9} {'peak MB':>8}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        elbo = "-" if r["final_neg_elbo"] is None else f"{r['final_neg_elbo']:.1f}"
        fd = "-" if r["final_frechet_distance"] is None else f"{r['final_frechet_distance']:.2f}"
        lines.append(f"{name:<11} {r['final_avg_accuracy']:>8.4f} {r['final_avg_forgetting']:>10.4f} "
                     f"{elbo:>8} {fd:>8} {r['train_seconds']:>9.1f} {r['peak_rss_mb']:>8.0f}")
    return "\n".join(lines)


def write_json_atomic(path: str, payload: dict) -> None:
    """Write ``payload`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
