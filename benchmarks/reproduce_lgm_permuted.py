"""LGM Exp. 5.2 / CCL-GM Sec. 3: permuted MNIST, 5 experiences (MNIST, then 4 fixed pixel permutations).

Every experience holds all ten digits (domain-incremental, one head;
``avalanche_lvae.streams.permuted_mnist``, permutations of stream seed 0).
After each experience every strategy is evaluated on the test sets of all
experiences seen so far: average accuracy (CCL-GM Fig. 3a), negative test
ELBO (nats) and Frechet distance (LGM Eq. 19). Strategies: ``lvae``,
``naive`` (vae-cl), ``ewc``, ``cumulative`` (upto-vae, the upper bound); see
``avalanche_lvae.experiments.strategies``. CCL-GM trains with batch 256 and Adam (1e-3 or
1e-4), as here; the paper early-stops on accuracy, here every experience gets
``--epochs`` epochs. The papers quote no permuted-MNIST numbers. This script
runs the papers' equations as written (classification weight 1, no z_c
consistency, replay labelled from the generating z;
``avalanche_lvae.experiments.reproduction.PAPER_EQUATIONS``), not the
library's defaults that ``avalanche-lvae run permuted_mnist`` uses.

Usage (from the repository root, one thread per run)::

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce_lgm_permuted.py
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce_lgm_permuted.py --quick   # smoke run

writing ``benchmarks/results/lgm_permuted_mnist[_quick].{json,png}`` (layout in
``avalanche_lvae.experiments.reproduction``). Full run: 3 seeds x 4 strategies x 5
experiences x 3 epochs of 60k images. **Estimated** time on this 2-core CPU,
one thread: about 85 minutes. Derivation: --quick (500 images per experience,
1 epoch) trained lvae / naive / ewc / cumulative in 1.0 / 0.5 / 1.0 / 1.4 s
per seed; x360 for 60k images and 3 epochs gives about 1400 s per seed; one
full-size evaluation took 6 s after the first and 21.5 s after the last
experience, about 275 s per seed; plus about 100 s for the reference
classifier on a first run (then cached).
"""

import sys

from avalanche_lvae.experiments.reproduction import Experiment, run_cli
from avalanche_lvae.streams import permuted_mnist

EXPERIMENT = Experiment(
    name="lgm_permuted_mnist",
    title="LGM Exp. 5.2 / CCL-GM Sec. 3: permuted MNIST",
    stream=permuted_mnist,
    reference_name="permuted_mnist",
    reference_epochs=1,  # as avalanche-lvae run permuted_mnist: about 100 s on one core, then cached
    baselines_of="permuted_mnist",
    n_experiences=5,
)


def main(argv=None) -> int:
    """Run the reproduction; returns the exit code (0 ok, 2 bad input, 1 diverged training)."""
    return run_cli(argv, __file__, EXPERIMENT, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
