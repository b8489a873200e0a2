"""LGM Exp. 6.2: ablation of the two regularisers on split MNIST, compared by Frechet distance.

Three ``LifelongVAEStrategy`` variants, otherwise identical to the ``lvae``
of the other reproductions (the papers' equations, same model, optimizer,
replay, evaluator):

=================  ==========================================================
both               consistency KL on z_d (weight 1) + L_I (info_weight 0.01): the papers' weights
consistency_only   info_weight=0 (no mutual-information term L_I)
neither            consistency_weight=0, info_weight=0 (replay only)
=================  ==========================================================

Stream: split MNIST, one digit per experience, 10 experiences
(``avalanche_lvae.streams.split_mnist(n_experiences=10)``, class order of
seed 0), rather than permuted MNIST, because

- LGM's ablation is on MNIST digits, and one digit per experience makes each
  z_d value one digit: the final sample grid (one row per z_d value, saved
  per variant and seed) shows directly which digits a variant still generates;
- each distribution is a digit class, which the Frechet distance's reference
  CNN separates best, so the FD directly measures whether old digits are still
  generated (on permuted MNIST the distributions differ only by a pixel
  permutation, where the FD hardly separates strategies);
- an epoch is 60k images in all, 5x cheaper than permuted MNIST's 300k.

The paper compares the three by Frechet distance (lower is better) and
quotes no numbers. What each term is for (docs/method.md): the
consistency KL keeps the student's z_d posterior of replayed images equal to
the teacher's, so that each past distribution keeps its z_d value; L_I pushes
the distribution identity into z_d rather than z_c. Without them the grids'
rows should mix digits and the FD of the past digits rise.

``tests/test_benchmarks.py`` checks that ``both`` reproduces the ``lvae`` of
``reproduce_lgm_split.py --dataset mnist`` number for number, so that a
variant cannot drift from the runner's ``lvae`` unnoticed.

Usage (from the repository root, one thread per run)::

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce_ablation.py
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce_ablation.py --quick   # smoke run

writing ``benchmarks/results/ablation_split_mnist[_quick].{json,png}`` and the
last sample grid of every variant and seed in
``benchmarks/results/ablation_split_mnist[_quick]_samples/<variant>_seed<k>.png``.
Full run: 3 seeds x 3 variants x 10 experiences x 3 epochs of 6k images.
**Estimated** time on this 2-core CPU, one thread: about 20 minutes.
Derivation: --quick (500 images per experience, 1 epoch) trained each variant
in about 2.0 s per seed; x36 for 6k images and 3 epochs gives about 220 s per
seed; one full-size evaluation takes 3-6 s (as split FashionMNIST), about
140 s per seed; plus about 60 s for the reference classifier on a first run.
"""

import sys

from avalanche_lvae.experiments.reproduction import Experiment, run_cli
from avalanche_lvae.streams import split_mnist

# Flags of ``avalanche-lvae run`` changed from the papers' equations.
VARIANTS = {
    "both": dict(consistency_weight=1.0, info_weight=0.01),
    "consistency_only": dict(consistency_weight=1.0, info_weight=0.0),
    "neither": dict(consistency_weight=0.0, info_weight=0.0),
}


EXPERIMENT = Experiment(
    name="ablation_split_mnist",
    title="LGM Exp. 6.2: regulariser ablation, split MNIST",
    stream=split_mnist,
    reference_name="split_mnist",
    reference_epochs=3,
    baselines_of="split_mnist",
    n_experiences=10,
    strategies=tuple(VARIANTS),
    metrics=("frechet_distance", "neg_elbo", "accuracy"),
    variants=VARIANTS,
    save_grids=True,
)


def main(argv=None) -> int:
    """Run the ablation; returns the exit code (0 ok, 2 bad input, 1 diverged training)."""
    return run_cli(argv, __file__, EXPERIMENT, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
