"""Row purity of the lifelong model's sample grid on split FashionMNIST: the standard against a fitted z_c prior.

LGM Sec. 4.3 generates a past distribution by fixing its z_d value and
drawing z_c ~ N(0, I); every row of the sample grid should show its own
distribution. ``component_purity`` measures that: the fraction of 500
samples per row that the reference classifier (a CNN over the (experience,
class) pairs) assigns to the row's experience; chance is 1/J.

==================  ===================================================================
paper               LifelongVAEStrategy with the papers' equations (classification weight 1)
fitted_prior        paper + ``--component-prior fitted`` (z_c of row j from a Gaussian fitted to j's z_c)
fitted_prior_cw100  fitted_prior, classification weight 100
==================  ===================================================================

Stream: split FashionMNIST, one class per experience (LGM Exp. 5.1), 3 epochs,
as ``avalanche-lvae run split_fmnist`` builds it.

Usage (from the repository root, one thread per run)::

    OMP_NUM_THREADS=1 python benchmarks/row_purity.py --seeds 0
    OMP_NUM_THREADS=1 python benchmarks/row_purity.py --quick   # smoke run

writing ``<out-dir>/row_purity_split_fmnist[_quick].{json,png}`` and the last
sample grid of every variant in ``..._samples/``. One seed trains a variant in
about 2 minutes and evaluates it in 2-3 more on one thread.
"""

import sys

from avalanche_lvae.experiments.reproduction import Experiment, run_cli
from avalanche_lvae.streams import split_fmnist

# Flags of ``avalanche-lvae run`` changed from the papers' equations.
VARIANTS = {
    "paper": dict(),
    "fitted_prior": dict(component_prior="fitted"),
    "fitted_prior_cw100": dict(component_prior="fitted", classification_weight=100.0),
}

EXPERIMENT = Experiment(
    name="row_purity_split_fmnist",
    title="Row purity of the sample grid, split FashionMNIST",
    stream=split_fmnist,
    reference_name="split_fmnist",
    reference_epochs=3,  # as avalanche-lvae run split_fmnist
    baselines_of="split_fmnist",
    n_experiences=10,
    strategies=tuple(VARIANTS),
    metrics=("component_purity", "frechet_distance", "neg_elbo", "accuracy"),
    variants=VARIANTS,
    save_grids=True,
)


def main(argv=None) -> int:
    """Run the comparison; returns the exit code (0 ok, 2 bad input, 1 diverged training)."""
    return run_cli(argv, __file__, EXPERIMENT, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
