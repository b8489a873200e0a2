"""Permuted MNIST (LGM Exp. 5.2 / CCL-GM Sec. 3): the lifelong VAE against baselines.

Experience 0 is plain MNIST, experiences 1..n-1 fixed pixel permutations of it;
every experience has all ten digits and task label 0 (one head, domain-incremental).

Usage (from the repository root)::

    PYTHONPATH=. .venv/bin/python examples/permuted_mnist.py                  # lvae,naive,ewc,gr
    PYTHONPATH=. .venv/bin/python examples/permuted_mnist.py --strategies lvae,naive \\
        --n-experiences 3 --max-train-per-experience 1000 --epochs 1 --results-json /tmp/pm.json

Prints one row per strategy (final average accuracy over the seen tasks,
average forgetting, final negative test ELBO, final Frechet distance, training
seconds, peak RSS) and, with ``--results-json``, writes every number; see
``examples/_common.py`` for the JSON layout and ``examples/_strategies.py`` for
the strategies. ``--plots DIR`` draws the curves, ``--checkpoint-dir DIR``
checkpoints after every experience and resumes an interrupted run,
``--no-frechet`` skips the Frechet distance. ``--help`` lists every flag.
"""

import sys

try:  # imported as examples.permuted_mnist
    from . import _common
except ImportError:  # run as a script: examples/ is sys.path[0]
    import os

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _common

BENCHMARK = "permuted_mnist"
# Epochs of the Frechet distance's reference classifier when it is not cached
# yet: one pass over the 5 x 60k images costs about 100 s on one core.
REFERENCE_EPOCHS = 1


def build_parser():
    return _common.build_parser(
        f"{BENCHMARK}.py",
        __doc__.splitlines()[0],
        default_n_experiences=5,
        default_epochs=2,
        # SI as in the continual-learning-baselines permuted MNIST script.
        default_si_lambda=0.1,
        default_si_eps=0.1,
        # Measured on this stream (README, Results): the classification term
        # weighted 100 for every LifelongVAE strategy (0.958 final accuracy
        # for lvae with 5 epochs, against 0.954 at 50 and 0.939 at 20), the z_c consistency of
        # LGM Eq. 11 and replay labelled at the teacher's posterior mode raise
        # lvae's final accuracy; the papers' equations stay available with
        # --classification-weight 1 --continuous-consistency 0 --replay-labels prior.
        default_classification_weight=100.0,
        default_continuous_consistency=1.0,
        default_replay_labels="posterior",
    )


def make_benchmark(args):
    from avalanche_lvae.streams import permuted_mnist

    return permuted_mnist(
        n_experiences=args.n_experiences,
        seed=args.seed,
        dataset_root=args.dataset_root,
        max_train_per_experience=args.max_train_per_experience,
        max_test_per_experience=args.max_test_per_experience,
    )


def main(argv=None) -> int:
    """Run the comparison; returns the exit code (0 ok, 2 bad input or checkpoint, 1 diverged training)."""
    return _common.run_cli(argv, build_parser(), BENCHMARK, make_benchmark, reference_epochs=REFERENCE_EPOCHS)


if __name__ == "__main__":
    sys.exit(main())
