"""``--plots DIR``: learning curves and the last sample grid of every strategy, as PNG files.

Written after all strategies finished:

- ``DIR/accuracy.png``: average test accuracy over the experiences seen so
  far, against the number of experiences seen (CCL-GM Fig. 3a);
- ``DIR/neg_elbo.png``: negative test ELBO (nats) over the seen test sets;
- ``DIR/frechet_distance.png``: Frechet distance of generated against seen
  test images (skipped with ``--no-frechet``);
- ``DIR/samples_<strategy>.png``: a copy of the strategy's last sample grid
  (one row per z_d value). Every grid of every evaluation, and the test
  reconstructions, are in ``DIR/<strategy>/``, saved there by the
  ``generated_samples_metrics`` of the evaluator.

Strategies without a generative model have no ELBO or Frechet line.
"""

from __future__ import annotations

import glob
import os
import shutil
from typing import Dict, List

__all__ = ["write_plots"]

_CURVES = (
    ("accuracy.png", "avg_accuracy_per_experience", "average accuracy on the seen tasks"),
    ("neg_elbo.png", "neg_elbo_per_experience", "negative test ELBO (nats)"),
    ("frechet_distance.png", "frechet_distance_per_experience", "Frechet distance"),
)


def _last_samples_grid(folder: str):
    grids = sorted(glob.glob(os.path.join(folder, "samples_*_after_exp*.png")))
    return grids[-1] if grids else None


def write_plots(out_dir: str, benchmark_name: str, results: Dict[str, dict]) -> List[str]:
    """Write the PNGs described in the module docstring; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and none is touched
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    written = []
    for file_name, key, label in _CURVES:
        curves = {name: r[key] for name, r in results.items() if r.get(key)}
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, values in curves.items():
            ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
        ax.set_xlabel("experiences seen")
        ax.set_ylabel(label)
        ax.set_title(benchmark_name)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, file_name)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    for name in results:
        grid = _last_samples_grid(os.path.join(out_dir, name))
        if grid is not None:
            path = os.path.join(out_dir, f"samples_{name}.png")
            shutil.copyfile(grid, path)
            written.append(path)
    return written
