"""The streams ``avalanche-lvae run`` knows, with the sizes and baseline settings of each.

========================  ======================================================================
``permuted_mnist``        MNIST then fixed pixel permutations, all ten digits per experience
                          (domain-incremental; LGM Exp. 5.2 / CCL-GM Sec. 3)
``split_fmnist``          FashionMNIST, one class per experience (class-incremental; LGM Exp. 5.1)
``split_mnist``           MNIST, 5 experiences x 2 classes (class-incremental, as Avalanche's
                          ``SplitMNIST``)
========================  ======================================================================

Each :class:`StreamSpec` holds only what belongs to the stream: its length,
the epochs and minibatch size that fit its size, the SynapticIntelligence
settings of the continual-learning-baselines script for that benchmark, and
the epochs of the Frechet distance's reference classifier. No setting of the
lifelong model lives here: the library's defaults apply to every stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

__all__ = ["StreamSpec", "STREAMS", "build_benchmark"]


def _permuted_mnist(**kwargs):
    from avalanche_lvae.streams import permuted_mnist

    return permuted_mnist(**kwargs)


def _split_fmnist(**kwargs):
    from avalanche_lvae.streams import split_fmnist

    return split_fmnist(**kwargs)


def _split_mnist(**kwargs):
    from avalanche_lvae.streams import split_mnist

    return split_mnist(**kwargs)


@dataclass(frozen=True)
class StreamSpec:
    """One stream of the runner.

    Attributes:
        name: the command-line name, also the ``benchmark`` of the results JSON.
        description: one line for ``--help``.
        builder: called as ``builder(n_experiences=, seed=, dataset_root=,
            max_train_per_experience=, max_test_per_experience=)``.
        n_experiences, epochs, batch_size: defaults of ``--n-experiences``,
            ``--epochs``, ``--batch-size``.
        si_lambda, si_eps: SynapticIntelligence defaults (continual-learning-baselines).
        reference_epochs: epochs of the reference classifier when it is not cached yet.
    """

    name: str
    description: str
    builder: Callable
    n_experiences: int
    epochs: int
    batch_size: int
    si_lambda: float
    si_eps: float
    reference_epochs: int


STREAMS: Dict[str, StreamSpec] = {spec.name: spec for spec in (
    # One pass over 5 x 60k images trains the reference classifier in about 100 s on one core.
    StreamSpec("permuted_mnist", "Permuted MNIST (LGM Exp. 5.2 / CCL-GM Sec. 3): MNIST, then fixed pixel "
               "permutations; all ten digits in every experience", _permuted_mnist,
               n_experiences=5, epochs=2, batch_size=256, si_lambda=0.1, si_eps=0.1, reference_epochs=1),
    # The library's epochs and batch; the lifelong model's settings for this stream are
    # --preset one_class (avalanche_lvae.presets.ONE_CLASS_PER_EXPERIENCE).
    StreamSpec("split_fmnist", "Split FashionMNIST (LGM Exp. 5.1): class-incremental, one class per "
               "experience by default", _split_fmnist,
               n_experiences=10, epochs=5, batch_size=128, si_lambda=1.0, si_eps=0.001, reference_epochs=3),
    # About the scale of Avalanche's generative_replay_splitMNIST.py example (batch 100, 4 epochs).
    StreamSpec("split_mnist", "Split MNIST: class-incremental, 5 experiences x 2 classes by default "
               "(as Avalanche's SplitMNIST)", _split_mnist,
               n_experiences=5, epochs=5, batch_size=128, si_lambda=1.0, si_eps=0.001, reference_epochs=3),
)}


def build_benchmark(spec: StreamSpec, args):
    """The stream ``spec`` at the sizes and seed of the parsed flags ``args``."""
    return spec.builder(n_experiences=args.n_experiences, seed=args.seed, dataset_root=args.dataset_root,
                        max_train_per_experience=args.max_train_per_experience,
                        max_test_per_experience=args.max_test_per_experience)
