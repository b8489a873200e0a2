"""Mean and standard deviation over seeds of every per-experience metric, as a table and a figure.

Used by :mod:`avalanche_lvae.experiments.reproduction`: ``per_seed`` maps a
seed (as text) to a strategy to its result of
:func:`avalanche_lvae.experiments.runner.run_strategy`.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import numpy as np

__all__ = ["METRICS", "summarize", "format_summary_table", "plot_summary"]

# metric name -> (key of the run_strategy result, axis label, table column, table format)
METRICS = {
    "accuracy": ("avg_accuracy_per_experience", "average accuracy, seen tasks", "avg acc", "{:.3f}"),
    "neg_elbo": ("neg_elbo_per_experience", "negative test ELBO (nats)", "-ELBO (nats)", "{:.1f}"),
    "frechet_distance": ("frechet_distance_per_experience", "Frechet distance", "FD", "{:.2f}"),
    "component_purity": ("component_purity_per_experience", "row purity of the sample grid", "purity", "{:.2f}"),
}


def summarize(per_seed: Mapping[str, Mapping[str, dict]], metrics: Sequence[str]) -> Dict[str, dict]:
    """Mean and population std (``ddof=0``) over the seeds of every per-experience metric of every strategy.

    A metric whose values are None (the strategy has no generative model, or
    no Frechet distance was computed) is left out.
    """
    seeds = list(per_seed)
    summary: Dict[str, dict] = {}
    for strategy in per_seed[seeds[0]]:
        summary[strategy] = {}
        for metric in metrics:
            rows = [per_seed[s][strategy][METRICS[metric][0]] for s in seeds]
            if any(r is None for r in rows):
                continue
            values = np.asarray(rows, dtype=float)  # [seeds, experiences]
            summary[strategy][metric] = {"mean": values.mean(0).tolist(), "std": values.std(0).tolist()}
    return summary


def format_summary_table(summary: Mapping[str, dict], per_seed: Mapping[str, Mapping[str, dict]],
                         metrics: Sequence[str]) -> str:
    """One row per strategy: each metric after the last experience as mean ± std, and mean training seconds."""
    head = f"{'strategy':<17}" + "".join(f"{METRICS[m][2]:>20}" for m in metrics) + f"{'train s':>10}"
    lines = [head, "-" * len(head)]
    for strategy, by_metric in summary.items():
        cells = []
        for metric in metrics:
            if metric not in by_metric:
                cells.append(f"{'-':>20}")
                continue
            fmt = METRICS[metric][3]
            mean, std = by_metric[metric]["mean"][-1], by_metric[metric]["std"][-1]
            cells.append(f"{fmt.format(mean) + ' ± ' + fmt.format(std):>20}")
        seconds = np.mean([runs[strategy]["train_seconds"] for runs in per_seed.values()])
        lines.append(f"{strategy:<17}" + "".join(cells) + f"{seconds:>10.1f}")
    return "\n".join(lines)


def plot_summary(summary: Mapping[str, dict], metrics: Sequence[str], title: str, path: str) -> None:
    """One panel per metric: the mean over seeds per strategy, with a ±std band, against experiences seen."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for strategy, by_metric in summary.items():
            if metric not in by_metric:
                continue
            mean, std = np.asarray(by_metric[metric]["mean"]), np.asarray(by_metric[metric]["std"])
            x = np.arange(1, len(mean) + 1)
            (line,) = ax.plot(x, mean, marker="o", label=strategy)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("experiences seen")
        ax.set_ylabel(METRICS[metric][1])
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
