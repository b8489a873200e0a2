"""Row purity of the lifelong model's sample grid on split FashionMNIST, and options beyond the papers.

LGM Sec. 4.3 generates a past distribution by fixing its z_d value and
drawing z_c ~ N(0, I); the metrics issue asks that every row of the sample
grid show its own distribution. ``component_purity`` measures that: the
fraction of 500 samples per row that the reference classifier (a CNN over
the (experience, class) pairs, test accuracy 0.884 here) assigns to the
row's experience; chance is 1/J.

===========================  ===================================================================
paper                        LifelongVAEStrategy with the papers' equations (classification weight 1)
distill_anchor               + DecoderDistillationPlugin (1) + ComponentAnchorPlugin (1)
distill_anchor_mmd           + AggregatePosteriorPlugin (MMD of the real data's z_c to N(0, I), 1000)
fitted_prior                 paper + ComponentPriorPlugin (z_c of row j from a Gaussian fitted to j's z_c)
fitted_prior_anchor          fitted_prior + ComponentAnchorPlugin (1)
fitted_prior_distill_anchor  fitted_prior + DecoderDistillationPlugin (1) + ComponentAnchorPlugin (1)
fitted_prior_cw100           fitted_prior, classification weight 100 (``examples/split_fmnist.py``'s lvae)
===========================  ===================================================================

Stream: split FashionMNIST, one class per experience (LGM Exp. 5.1), 3 epochs,
as ``examples/split_fmnist.py`` builds it.

Usage (from the repository root, one thread per run)::

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/row_purity.py --seeds 0 \
        --strategies paper,distill_anchor,distill_anchor_mmd
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/row_purity.py --seeds 0 \
        --strategies fitted_prior,fitted_prior_anchor,fitted_prior_cw100 --out-dir benchmarks/results/row_purity_fitted
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/row_purity.py --quick   # smoke run

writing ``<out-dir>/row_purity_split_fmnist[_quick].{json,png}`` and the last
sample grid of every variant in ``..._samples/``. One seed trains a variant in
about 2 minutes and evaluates it in 2-3 more on one thread.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _reproduce  # noqa: E402
from avalanche_lvae import JointBoundLoss  # noqa: E402
from avalanche_lvae.streams import split_fmnist  # noqa: E402

VARIANTS = {
    "paper": dict(),
    "distill_anchor": dict(decoder_distillation_weight=1.0, component_anchor_weight=1.0),
    "distill_anchor_mmd": dict(decoder_distillation_weight=1.0, component_anchor_weight=1.0,
                               aggregate_posterior_weight=1000.0),
    "fitted_prior": dict(component_prior="fitted"),
    "fitted_prior_anchor": dict(component_prior="fitted", component_anchor_weight=1.0),
    "fitted_prior_distill_anchor": dict(component_prior="fitted", decoder_distillation_weight=1.0,
                                        component_anchor_weight=1.0),
    # examples/split_fmnist.py's lvae defaults until session 5 (it now mixes by batch composition).
    "fitted_prior_cw100": dict(component_prior="fitted", criterion=JointBoundLoss(classification_weight=100.0)),
}

EXPERIMENT = _reproduce.Experiment(
    name="row_purity_split_fmnist",
    title="Row purity of the sample grid, split FashionMNIST",
    stream=split_fmnist,
    reference_name="split_fmnist",
    reference_epochs=3,  # as examples/split_fmnist.py
    example="split_fmnist",
    n_experiences=10,
    strategies=tuple(VARIANTS),
    choices=tuple(VARIANTS),
    metrics=("component_purity", "frechet_distance", "neg_elbo", "accuracy"),
    factories={name: _reproduce.lvae_variant(name, **options) for name, options in VARIANTS.items()},
    save_grids=True,
)


def main(argv=None) -> int:
    """Run the comparison; returns the exit code (0 ok, 2 bad input, 1 diverged training)."""
    return _reproduce.run_cli(argv, __file__, EXPERIMENT, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
