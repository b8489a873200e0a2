"""The pieces every entry of ``benchmarks/leaderboard.py`` is built from.

As ``experiments/utils.py`` of ContinualAI/continual-learning-baselines:
:func:`create_default_args` and :func:`set_seed`; then the streams
(:func:`pmnist`, :func:`smnist`), the strategies (Avalanche's over the
leaderboard's ``SimpleMLP``, and the lifelong VAE's), the loop that trains
experience by experience and evaluates on the test sets seen so far
(:func:`train_and_evaluate`), and the markdown table (:func:`format_markdown`).
The entries and their hyperparameters are in ``leaderboard.py``.
"""

import importlib.util
import inspect
import os
import time
from types import SimpleNamespace

import torch
from torch.nn import CrossEntropyLoss
from torch.optim import Adam

from avalanche_lvae.experiments.reproduction import STREAM_SEED
from avalanche_lvae.experiments.runner import ACC_STREAM, FORGETTING, accuracy_row, metric_value
from avalanche_lvae.experiments.strategies import quiet_generator_strategy

# Shared by every entry; an entry's dict may override them, override_args may override anything.
BASE_ARGS = dict(seed=0, n_experiences=5, max_train_per_experience=None, max_test_per_experience=None,
                 dataset_root=None, device="cpu", eval_mb_size=1024, save_models=None)


def set_seed(seed: int) -> None:
    """Seed torch, numpy and random (Avalanche's ``RNGManager``), as the baselines' ``set_seed``."""
    from avalanche.training.determinism.rng_manager import RNGManager

    RNGManager.set_random_seeds(seed)


def create_default_args(args_dict: dict, override_args=None) -> SimpleNamespace:
    """``BASE_ARGS``, then ``args_dict``, then ``override_args``; an override of an unknown key is an error."""
    args = dict(BASE_ARGS, **args_dict)
    unknown = sorted(set(override_args or {}) - set(args))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(sorted(args))}")
    args.update(override_args or {})
    return SimpleNamespace(**args)


# --------------------------------------------------------------------------- streams
def pmnist(args):
    """Permuted MNIST: MNIST then ``args.n_experiences - 1`` fixed permutations of the stream seed."""
    from avalanche_lvae.streams import permuted_mnist

    return permuted_mnist(n_experiences=args.n_experiences, seed=STREAM_SEED,
                          dataset_root=args.dataset_root, max_train_per_experience=args.max_train_per_experience,
                          max_test_per_experience=args.max_test_per_experience)


def smnist(args):
    """Class-incremental split MNIST (``args.n_experiences`` experiences of 10 / n classes)."""
    from avalanche_lvae.streams import split_mnist

    return split_mnist(n_experiences=args.n_experiences, seed=STREAM_SEED, dataset_root=args.dataset_root,
                       max_train_per_experience=args.max_train_per_experience,
                       max_test_per_experience=args.max_test_per_experience)


# --------------------------------------------------------------------------- strategies
def strategy_kwargs(args) -> dict:
    """Minibatch sizes, epochs, device and a quiet evaluator with accuracy and forgetting."""
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.training.plugins import EvaluationPlugin

    evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                 forgetting_metrics(experience=True, stream=True), loggers=[])
    return dict(train_mb_size=args.train_mb_size, train_epochs=args.epochs, eval_mb_size=args.eval_mb_size,
                device=torch.device(args.device), evaluator=evaluator)


def mlp(args):
    """Avalanche's ``SimpleMLP``, 2 hidden layers of 512, dropout ``args.drop_rate``."""
    from avalanche.models import SimpleMLP

    return SimpleMLP(num_classes=10, input_size=28 * 28, hidden_size=512, hidden_layers=2, drop_rate=args.drop_rate)


def mlp_strategy(cls, args, optimizer=Adam, **strategy_args):
    """Avalanche strategy ``cls`` over the leaderboard's ``SimpleMLP`` with cross-entropy."""
    model = mlp(args)
    return cls(model=model, optimizer=optimizer(model.parameters(), lr=args.learning_rate),
               criterion=CrossEntropyLoss(), **strategy_args, **strategy_kwargs(args))


def lvae_large_args_dict() -> dict:
    """``lvae_large_strategy``'s hyperparameters: classification weight 100, and the library's z_c size, z_c
    consistency weight, component prior and replay temperature read from its signatures, so that the two cannot
    drift apart."""
    from avalanche_lvae import LifelongVAE, LifelongVAEStrategy

    def library_default(api, name):
        return inspect.signature(api).parameters[name].default

    return dict(classification_weight=100.0, replay_size=None,
                continuous_dim=library_default(LifelongVAE, "continuous_dim"),
                normalization=library_default(LifelongVAE, "normalization"),
                continuous_consistency_weight=library_default(LifelongVAEStrategy, "continuous_consistency_weight"),
                component_prior=library_default(LifelongVAEStrategy, "component_prior"),
                replay_temperature=library_default(LifelongVAEStrategy, "replay_temperature"),
                component_anchor_weight=library_default(LifelongVAEStrategy, "component_anchor_weight"))


def lvae_large_strategy(args):
    """Replay-through-feedback's scale for permuted MNIST on the library's defaults: ``LifelongVAE(hidden_dim=1000)``
    (RtF's 2 x 1000 layers, ``args.continuous_dim``), every real image every epoch (``replay_mixing="loss_weights"``,
    a replayed batch twice as large as the real one unless ``args.replay_size`` says otherwise), and the
    classification and z_c consistency weights, component prior, replay temperature and normalisation of
    ``args``."""
    from avalanche_lvae import LifelongVAE, LifelongVAEStrategy

    model = LifelongVAE(hidden_dim=1000, continuous_dim=args.continuous_dim, normalization=args.normalization)
    return LifelongVAEStrategy(model=model, optimizer=Adam(model.parameters(), lr=args.learning_rate),
                               replay_mixing="loss_weights", replay_size=args.replay_size or 2 * args.train_mb_size,
                               classification_weight=args.classification_weight,
                               continuous_consistency_weight=args.continuous_consistency_weight,
                               component_prior=args.component_prior, replay_temperature=args.replay_temperature,
                               component_anchor_weight=args.component_anchor_weight,
                               **strategy_kwargs(args))


def generative_replay_strategy(args):
    """Avalanche's ``GenerativeReplay`` over the MLP with its default generator, built quiet as in the examples."""
    from avalanche.training import GenerativeReplay

    generator = quiet_generator_strategy(args.train_mb_size, args.epochs, torch.device(args.device))
    return mlp_strategy(GenerativeReplay, args, generator_strategy=generator)


def lvae_default_strategy(args):
    """``LifelongVAEStrategy(model=LifelongVAE(), optimizer=Adam)``: the library's defaults, nothing else."""
    from avalanche_lvae import LifelongVAE, LifelongVAEStrategy

    model = LifelongVAE()
    return LifelongVAEStrategy(model=model, optimizer=Adam(model.parameters(), lr=args.learning_rate),
                               **strategy_kwargs(args))


def lvae_naive_strategy(args):
    """The same model and criterion as :func:`lvae_default_strategy` under Avalanche's ``Naive``: the
    reference of the lifelong model's training time (no teacher, no replay, no regulariser)."""
    from avalanche_lvae import JointBoundLoss, LifelongVAE, LifelongVAEStrategy, LVAENaive

    model = LifelongVAE(discrete_dim=args.n_experiences)
    return LVAENaive(model=model, optimizer=Adam(model.parameters(), lr=args.learning_rate),
                     criterion=JointBoundLoss(LifelongVAEStrategy.DEFAULT_CLASSIFICATION_WEIGHT),
                     **strategy_kwargs(args))


def lvae_paper_strategy(args):
    """``LifelongVAEStrategy`` over the classifier on z, its regulariser weights read from ``args``."""
    from avalanche_lvae import JointBoundLoss, LifelongVAE, LifelongVAEStrategy
    from avalanche_lvae.presets import PAPER_MODEL, PAPER_STRATEGY

    # The classifier on z and undistilled replay labels, as when these entries were measured.
    model = LifelongVAE(discrete_dim=1, hidden_dim=args.hidden_dim, **PAPER_MODEL)
    return LifelongVAEStrategy(model=model, optimizer=Adam(model.parameters(), lr=args.learning_rate),
                               criterion=JointBoundLoss(classification_weight=args.classification_weight),
                               consistency_weight=args.consistency_weight, info_weight=args.info_weight,
                               continuous_consistency_weight=args.continuous_consistency_weight,
                               replay_label_source=args.replay_label_source,
                               distillation_temperature=PAPER_STRATEGY["distillation_temperature"],
                               # leaderboard.md was measured with loss weights (every real image every epoch)
                               replay_mixing="loss_weights", **strategy_kwargs(args))


def require_quadprog() -> None:
    """Fail early, naming the fix, when GEM's QP solver is not installed."""
    if importlib.util.find_spec("quadprog") is None:
        raise ModuleNotFoundError("gem_pmnist needs the QP solver quadprog (GEM's qpsolvers backend): "
                                  "pip install quadprog")


# --------------------------------------------------------------------------- training and the table
def train_and_evaluate(strategy, benchmark, args) -> dict:
    """Train on each experience, then evaluate on the test sets seen so far; the last evaluation's results.

    Returns ``final_avg_accuracy`` (``Top1_Acc_Stream`` over all test sets),
    ``final_avg_forgetting`` (``StreamForgetting``), ``train_seconds`` (inside
    ``strategy.train`` only), ``accuracy_per_experience`` (row i: the
    accuracy on test sets 0..i after training experience i, as in the runner's
    results JSON, so that forgetting can be followed boundary by boundary), ``args`` and ``metrics`` (every
    value of the last eval). With ``args.save_models`` set, a lifelong VAE is saved after each experience as
    ``<save_models>/model_exp<i>.pt`` (``torch.save`` of the module; the teacher of experience i + 1), outside the
    timed training, for ``benchmarks/component_usage.py``.
    """
    from avalanche_lvae import LifelongVAE

    train_seconds, accuracy_rows = 0.0, []
    for i, experience in enumerate(benchmark.train_stream):
        started = time.perf_counter()
        strategy.train(experience)
        train_seconds += time.perf_counter() - started
        if args.save_models is not None and isinstance(strategy.model, LifelongVAE):
            os.makedirs(args.save_models, exist_ok=True)
            torch.save(strategy.model, os.path.join(args.save_models, f"model_exp{i}.pt"))
        metrics = strategy.eval(benchmark.test_stream[: i + 1])
        accuracy_rows.append(accuracy_row(metrics, i + 1))
    return dict(final_avg_accuracy=metric_value(metrics, ACC_STREAM),
                final_avg_forgetting=metric_value(metrics, FORGETTING),
                train_seconds=train_seconds, accuracy_per_experience=accuracy_rows, args=vars(args),
                metrics={k: float(v) for k, v in metrics.items()})


def format_markdown(results: dict, command: str) -> str:
    """The leaderboard table in markdown, one row per entry, in run order."""
    lines = ["# Leaderboard", "",
             "Permuted MNIST (all 10 digits each, 5 experiences unless the command's `--n-experiences` says otherwise;",
             "`lvae_sfmnist`: split FashionMNIST, 10 classes;",
             "`*_smnist`: split MNIST, class-incremental, 5 experiences x 2 classes),",
             "evaluated on every test set after the last experience; hyperparameters in `benchmarks/leaderboard.py`.",
             "", f"`{command}`", "",
             "| entry | final avg accuracy | average forgetting | train s |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['final_avg_accuracy']:.4f} | {r['final_avg_forgetting']:.4f} "
                     f"| {r['train_seconds']:.2f} |")
    return "\n".join(lines) + "\n"
