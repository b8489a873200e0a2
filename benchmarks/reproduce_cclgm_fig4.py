"""CCL-GM Fig. 4: MNIST -> FashionMNIST -> permuted MNIST, three experiences of very different data.

``avalanche_lvae.streams.mnist_fashion_permuted``: all 60k / 10k images of
each; FashionMNIST keeps its labels 0-9, so one 10-way head serves the three
tasks; the permutation is the first one of permuted MNIST (stream seed 0).
After each experience every strategy is evaluated on the test sets seen so
far: average accuracy (what CCL-GM Fig. 4 plots, per task, for its lifelong
classifier against EWC and vae-cl), negative test ELBO (nats) and Frechet
distance. Strategies: ``lvae``, ``naive`` (vae-cl), ``ewc``, ``cumulative``
(the upper bound); see ``avalanche_lvae.experiments.strategies``. The paper
quotes no numbers for this figure: compare shapes (lvae keeps MNIST and FashionMNIST
while learning the permutation; naive forgets them).

Usage (from the repository root, one thread per run)::

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce_cclgm_fig4.py
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/reproduce_cclgm_fig4.py --quick   # smoke run

writing ``benchmarks/results/cclgm_fig4[_quick].{json,png}`` (layout in
``avalanche_lvae.experiments.reproduction``). Full run: 3 seeds x 4 strategies x 3
experiences x 3 epochs of 60k images. **Estimated** time on this 2-core CPU,
one thread: about 45 minutes. Derivation: --quick (500 images per experience,
1 epoch) trained lvae / naive / ewc / cumulative in 0.7 / 0.3 / 0.6 / 0.6 s
per seed; x360 for 60k images and 3 epochs gives about 770 s per seed; three
full-size evaluations over 10k-30k test images, about 120 s per seed (scaled
from the permuted MNIST timings); plus about 60 s for the reference
classifier on a first run (then cached).
"""

import sys

from avalanche_lvae.experiments.reproduction import Experiment, run_cli


def three_datasets(n_experiences, **kwargs):
    """``mnist_fashion_permuted`` with the signature ``Experiment.stream`` expects."""
    from avalanche_lvae.streams import mnist_fashion_permuted

    if n_experiences != 3:
        raise ValueError(f"this stream has exactly 3 experiences, got --n-experiences {n_experiences}")
    return mnist_fashion_permuted(**kwargs)


EXPERIMENT = Experiment(
    name="cclgm_fig4",
    title="CCL-GM Fig. 4: MNIST -> FashionMNIST -> permuted MNIST",
    stream=three_datasets,
    reference_name="mnist_fashion_permuted",
    reference_epochs=1,  # 180k images: about 60 s on one core, then cached
    baselines_of="permuted_mnist",
    n_experiences=3,
)


def main(argv=None) -> int:
    """Run the reproduction; returns the exit code (0 ok, 2 bad input, 1 diverged training)."""
    return run_cli(argv, __file__, EXPERIMENT, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
