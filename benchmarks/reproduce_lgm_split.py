"""LGM Exp. 5.1: split FashionMNIST, one class per experience (``--dataset mnist``: the MNIST variant, App. 9.4).

10 experiences of one class each (``avalanche_lvae.streams.split_fmnist``,
class order of ``SplitFMNIST(seed=0)``; with ``--dataset mnist``
``avalanche_lvae.streams.split_mnist(n_experiences=10)``, the same split of MNIST). After each experience every
strategy is evaluated on the test sets of all classes seen so far: negative test ELBO (nats, lower is better),
Frechet distance of generated against seen test images (LGM Eq. 19, lower is
better) and, since it is measured anyway, the average accuracy. Strategies:
``lvae`` (the lifelong VAE), ``naive`` (vae-cl), ``ewc``, ``cumulative``
(upto-vae, the upper bound); see ``avalanche_lvae.experiments.strategies``.

Paper (LGM App. 9.4, MNIST, after the last digit): lifelong 165 nats / FD
128.42 against EWC 149 nats / FD 193.09, i.e. the lifelong model's ELBO is
about EWC's and its samples are much closer to the data. The paper gives no
table for FashionMNIST (curves only, LGM Fig. 5).

Usage (from the repository root, one thread per run)::

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce_lgm_split.py
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce_lgm_split.py --dataset mnist
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce_lgm_split.py --quick   # smoke run

writing ``benchmarks/results/lgm_split_<fmnist|mnist>[_quick].{json,png}``
(layout in ``avalanche_lvae.experiments.reproduction``). Full run: 3 seeds x 4 strategies x
10 experiences x 3 epochs of 6k images. **Estimated** time on this 2-core CPU,
one thread: about 30 minutes per dataset. Derivation: --quick (500 images per
experience, 1 epoch) trained lvae / naive / ewc / cumulative in 2.2 / 1.0 /
2.5 / 5.5 s per seed; x36 for 6k images and 3 epochs gives about 400 s per
seed (lvae 79 s); one full-size evaluation (10k
generated images for the FD, ELBO on the seen test sets) took 3.0 s after the
first and 6.3 s after the last experience, about 190 s per seed; plus about
60 s for the reference classifier on a first run (then cached).
"""

import sys

from avalanche_lvae.experiments.reproduction import Experiment, run_cli
from avalanche_lvae.streams import split_fmnist, split_mnist

PAPER = {
    "fmnist": "",
    "mnist": "LGM App. 9.4, MNIST, after the last digit: lifelong 165 nats / FD 128.42, EWC 149 nats / FD 193.09",
}


def add_arguments(parser):
    parser.add_argument("--dataset", choices=("fmnist", "mnist"), default="fmnist",
                        help="FashionMNIST (LGM Exp. 5.1) or MNIST (LGM App. 9.4)")


def make_experiment(args) -> Experiment:
    """The experiment for ``--dataset`` (None: the default, FashionMNIST)."""
    dataset = "fmnist" if args is None else args.dataset
    return Experiment(
        name=f"lgm_split_{dataset}",
        title=f"LGM Exp. 5.1: split {'FashionMNIST' if dataset == 'fmnist' else 'MNIST'}, one class per experience",
        stream=split_fmnist if dataset == "fmnist" else split_mnist,
        reference_name=f"split_{dataset}",
        reference_epochs=3,  # as avalanche-lvae run split_fmnist: about 60 s on one core, then cached
        baselines_of=f"split_{dataset}",
        n_experiences=10,
        metrics=("neg_elbo", "frechet_distance", "accuracy"),
        paper=PAPER[dataset],
    )


def main(argv=None) -> int:
    """Run the reproduction; returns the exit code (0 ok, 2 bad input, 1 diverged training)."""
    return run_cli(argv, __file__, make_experiment, add_arguments, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
