"""Leaderboard: Avalanche's strategies and the lifelong VAE on permuted MNIST, one function per entry.

Shaped like ContinualAI/continual-learning-baselines (``experiments/permuted_mnist/*.py``):
each entry is a function ``<strategy>_<benchmark>(override_args=None)`` that
builds its hyperparameters in one dict (merged with ``override_args`` by
``create_default_args``), calls ``set_seed``, trains on the stream experience by
experience, evaluates on the test sets seen so far after each one, and returns
the results of the last evaluation. The entries and their hyperparameters are
here; the streams, strategy builders and training loop they share are in
``leaderboard_common.py`` beside this file.

The ``*_pmnist`` entries share the stream ``avalanche_lvae.streams.permuted_mnist``
(MNIST then 4 fixed permutations of stream seed 0, pixels in [0, 1], all
60k / 10k images) and one 10-way head; Avalanche's strategies run on
``SimpleMLP(hidden_size=512, hidden_layers=2)`` with cross-entropy. Protocol
by default: Adam lr 1e-3, batch 256, 3 epochs, except GEM and A-GEM with the
baselines' settings (SGD lr 0.1, batch 10, 1 epoch, no dropout; GEM on the
first 1000 images of each experience, as the baselines' ``GEM_reduced`` and
the GEM paper). ``--epochs`` and ``--batch-size`` override every entry: the
runs in ``benchmarks/results/leaderboard_pmnist_e5*/`` are ``--epochs 5
--batch-size 128``, the library's default protocol. ``--n-experiences 10``
gives 10-task permuted MNIST; ``--learning-rate`` overrides every entry's
learning rate (the ``leaderboard_*_lr1e-4/`` runs use
replay-through-feedback's Adam lr 1e-4) and ``--classification-weight`` the
lifelong VAE entries' classification weight (the ``*_cw784_lr1e-4*/`` runs use 784,
replay-through-feedback's balance: its ELBO is averaged over the 784 pixels,
its classification loss is not); ``--continuous-dim`` the size of
``lvae_large_pmnist``'s z_c (``*_zc100/``: replay-through-feedback's 100)
and ``--continuous-consistency-weight`` the weight of the consistency KL on
z_c of the entries with a classification weight (``*_cc10/``: 10);
``--normalization`` the dense layers' normalisation of ``lvae_large_pmnist``
(``*_norm_layer/``: LayerNorm) and ``--component-anchor-weight`` the weight of
its component anchor (``*_anchor100/``: 100).

The lifelong VAE's entries: ``lvae_pmnist``, ``LifelongVAEStrategy`` over
``LifelongVAE(discrete_dim=1)`` (hidden 512, 2 layers, as the MLP) with the
papers' regularisers; ``lvae_defaults_pmnist``, the library's defaults
(``LifelongVAEStrategy(model=LifelongVAE(), optimizer=Adam)``, nothing else);
``lvae_large_pmnist``, replay-through-feedback's scale (hidden 1000,
loss-weight mixing with twice as many replayed rows as real ones,
classification weight 100); ``lvae_large_real_replay_pmnist``, the same
replaying real past training images in place of generated ones, the
upper bound of its replay; ``lvae_naive_pmnist``, the
defaults' model and criterion under ``LVAENaive``, the reference of its
training time; ``lvae_sfmnist``, ``lvae_pmnist``'s model on split
FashionMNIST (10 experiences of one class). The ``*_smnist`` entries run on
class-incremental split MNIST (``avalanche_lvae.streams.split_mnist``, 5
experiences x 2 classes) at 5 epochs, batch 128, Adam lr 1e-3: Avalanche's
Naive, EWC, LwF, GenerativeReplay and Cumulative on the MLP, ``lvae_smnist``
with the library's defaults and ``lvae_naive_smnist``; the runs in
``benchmarks/results/leaderboard_smnist_e20*/`` are ``--epochs 20``, about
replay-through-feedback's 2000 iterations of 128 images per experience.
``gem_pmnist`` needs the ``quadprog`` QP solver (``pip install quadprog``).
EWC's and SI's lambdas come from small sweeps (in their docstrings); SI runs
with a fix for Avalanche 0.6, whose SI learns nothing on CPU
(:func:`avalanche_lvae.avalanche_fixes.synaptic_intelligence_weight_copies`).

Usage (from the repository root, one thread per run)::

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/leaderboard.py
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/leaderboard.py --entries naive_pmnist,lvae_pmnist
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/leaderboard.py --quick   # smoke run

writes ``benchmarks/results/leaderboard.md`` (entry, final average accuracy
over the 5 tasks, average forgetting, training seconds) and
``leaderboard.json`` beside it (every metric, every hyperparameter);
``--quick`` (500 training / 200 test images per experience, 1 epoch) writes
``leaderboard_quick.*`` instead, so it never overwrites full results.
"""

import argparse
import importlib.util
import os
import sys
import time
import warnings

import torch
from torch.optim import SGD

from avalanche_lvae import LifelongVAE, LifelongVAEStrategy
from avalanche_lvae.avalanche_fixes import synaptic_intelligence_weight_copies
from avalanche_lvae.experiments.arguments import OneLineErrorParser, finite_number, non_negative_int, positive_int
from avalanche_lvae.experiments.reproduction import STREAM_SEED, command_line
from avalanche_lvae.experiments.results import write_json_atomic

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT_DIR = os.path.join(HERE, "results")


def import_sibling(name: str):
    """Import ``benchmarks/<name>.py`` by its path. ``benchmarks/`` is not a package and this file is both run as
    a script and loaded by path (the tests), so a plain ``import`` would find the sibling only in the first case."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = import_sibling("leaderboard_common")
# The baselines' vocabulary (continual-learning-baselines' experiments/utils.py), used by every entry.
create_default_args, set_seed = common.create_default_args, common.set_seed
train_and_evaluate = common.train_and_evaluate

ENTRIES = {}
_ADAM_MLP = dict(epochs=3, learning_rate=1e-3, train_mb_size=256, drop_rate=0.5)  # SimpleMLP's default dropout
# LifelongVAEStrategy with the papers' equations as written (CCL-GM Eq. 4 + LGM Eq. 10).
_LVAE_PAPER = dict(epochs=3, learning_rate=1e-3, train_mb_size=256, hidden_dim=512, consistency_weight=1.0,
                   info_weight=0.01, classification_weight=1.0, continuous_consistency_weight=0.0,
                   replay_label_source="prior")
# Split MNIST (5 x 2 classes, about 12k images per experience): every entry at the same epochs and batch.
_SMNIST = dict(epochs=5, learning_rate=1e-3, train_mb_size=128)
QUICK_OVERRIDES = dict(epochs=1, max_train_per_experience=500, max_test_per_experience=200)
# The hyperparameters that only some entries hold, each with those entries: its flag may name no other entry.
_LARGE_LVAE = ("lvae_large_pmnist", "lvae_large_real_replay_pmnist")
_WEIGHTED_LVAE = ("lvae_pmnist", *_LARGE_LVAE, "lvae_sfmnist")
ENTRY_OVERRIDES = {"classification_weight": _WEIGHTED_LVAE, "continuous_consistency_weight": _WEIGHTED_LVAE,
                   "continuous_dim": _LARGE_LVAE, "replay_size": _LARGE_LVAE, "component_prior": _LARGE_LVAE,
                   "replay_temperature": _LARGE_LVAE, "normalization": _LARGE_LVAE,
                   "component_anchor_weight": _LARGE_LVAE}


def entry(function):
    """Register a leaderboard entry under its function name."""
    ENTRIES[function.__name__] = function
    return function


# --------------------------------------------------------------------------- entries
@entry
def naive_pmnist(override_args=None):
    """Avalanche's ``Naive`` (fine-tuning): the lower bound."""
    from avalanche.training import Naive

    args = create_default_args(dict(_ADAM_MLP), override_args)
    set_seed(args.seed)
    return train_and_evaluate(common.mlp_strategy(Naive, args), common.pmnist(args), args)


@entry
def ewc_pmnist(override_args=None):
    """Avalanche's ``EWC`` (separate penalty per experience).

    lambda swept on 3000 training / 1000 test images per experience, 3
    epochs, seed 0 (final average accuracy): 1: 0.736, 1e2: 0.744, 1e3:
    0.768, 1e4: 0.808, 1e5: 0.800 (naive: 0.760). Avalanche's importance is
    the mean squared minibatch-mean gradient, hence a lambda far above the
    baselines' 1 (which used SGD lr 1e-3 for 30 epochs).
    """
    from avalanche.training import EWC

    args = create_default_args(dict(_ADAM_MLP, drop_rate=0.0, ewc_lambda=1e4, ewc_mode="separate"), override_args)
    set_seed(args.seed)
    strategy = common.mlp_strategy(EWC, args, ewc_lambda=args.ewc_lambda, mode=args.ewc_mode)
    return train_and_evaluate(strategy, common.pmnist(args), args)


@entry
def si_pmnist(override_args=None):
    """Avalanche's ``SynapticIntelligence``, made to work on CPU by
    :func:`avalanche_lvae.avalanche_fixes.synaptic_intelligence_weight_copies`.

    eps 0.1 as the baselines' permuted MNIST script; their si_lambda 0.1
    changes nothing here. Swept as ``ewc_pmnist`` (final average accuracy):
    0.1: 0.758, 10: 0.761, 100: 0.791, 1e3: 0.797, 1e4: 0.689 (naive: 0.760).
    Avalanche clips every importance to 0.001, hence the large lambda.
    """
    from avalanche.training import SynapticIntelligence

    args = create_default_args(dict(_ADAM_MLP, si_lambda=1e3, si_eps=0.1), override_args)
    set_seed(args.seed)
    strategy = common.mlp_strategy(SynapticIntelligence, args, si_lambda=args.si_lambda, eps=args.si_eps)
    with synaptic_intelligence_weight_copies():
        return train_and_evaluate(strategy, common.pmnist(args), args)


@entry
def lwf_pmnist(override_args=None):
    """Avalanche's ``LwF``, alpha and temperature of the baselines' permuted MNIST script."""
    from avalanche.training import LwF

    args = create_default_args(dict(_ADAM_MLP, lwf_alpha=1.0, lwf_temperature=1.0), override_args)
    set_seed(args.seed)
    strategy = common.mlp_strategy(LwF, args, alpha=args.lwf_alpha, temperature=args.lwf_temperature)
    return train_and_evaluate(strategy, common.pmnist(args), args)


@entry
def gem_pmnist(override_args=None):
    """Avalanche's ``GEM`` with the baselines' settings (1000 training images per experience, SGD, batch 10)."""
    from avalanche.training import GEM

    args = create_default_args(dict(epochs=1, learning_rate=0.1, train_mb_size=10, drop_rate=0.0,
                                    patterns_per_exp=1000, memory_strength=0.5, max_train_per_experience=1000),
                               override_args)
    common.require_quadprog()
    set_seed(args.seed)
    strategy = common.mlp_strategy(GEM, args, optimizer=SGD, patterns_per_exp=args.patterns_per_exp,
                                   memory_strength=args.memory_strength)
    return train_and_evaluate(strategy, common.pmnist(args), args)


@entry
def agem_pmnist(override_args=None):
    """Avalanche's ``AGEM`` with the baselines' settings (SGD lr 0.1, batch 10, 1 epoch)."""
    from avalanche.training import AGEM

    args = create_default_args(dict(epochs=1, learning_rate=0.1, train_mb_size=10, drop_rate=0.0,
                                    patterns_per_exp=250, sample_size=256), override_args)
    set_seed(args.seed)
    strategy = common.mlp_strategy(AGEM, args, optimizer=SGD, patterns_per_exp=args.patterns_per_exp,
                                   sample_size=args.sample_size)
    return train_and_evaluate(strategy, common.pmnist(args), args)


@entry
def generative_replay_pmnist(override_args=None):
    """Avalanche's ``GenerativeReplay`` with its default generator (``MlpVAE``), built quiet as in the examples."""
    args = create_default_args(dict(_ADAM_MLP), override_args)
    set_seed(args.seed)
    return train_and_evaluate(common.generative_replay_strategy(args), common.pmnist(args), args)


@entry
def cumulative_pmnist(override_args=None):
    """Avalanche's ``Cumulative`` (all data seen so far): the upper bound."""
    from avalanche.training import Cumulative

    args = create_default_args(dict(_ADAM_MLP), override_args)
    set_seed(args.seed)
    return train_and_evaluate(common.mlp_strategy(Cumulative, args), common.pmnist(args), args)


@entry
def lvae_pmnist(override_args=None):
    """``LifelongVAEStrategy`` over the classifier on z: the papers' regulariser weights (consistency 1,
    L_I 0.01) with classification weight 20, z_c consistency 1 and replay labelled at the teacher's
    posterior mode."""
    args = create_default_args(dict(_LVAE_PAPER, classification_weight=20.0, continuous_consistency_weight=1.0,
                                    replay_label_source="posterior"), override_args)
    set_seed(args.seed)
    return train_and_evaluate(common.lvae_paper_strategy(args), common.pmnist(args), args)


@entry
def lvae_defaults_pmnist(override_args=None):
    """``LifelongVAEStrategy`` with the library's defaults (``LifelongVAE()``, no extra argument),
    at the Avalanche entries' epochs and batch."""
    args = create_default_args(dict(_ADAM_MLP), override_args)
    set_seed(args.seed)
    return train_and_evaluate(common.lvae_default_strategy(args), common.pmnist(args), args)


def _large_args(override_args):
    """``lvae_large_pmnist``'s arguments (``common.lvae_large_args_dict``), seeded."""
    args = create_default_args(dict(_ADAM_MLP, **common.lvae_large_args_dict()), override_args)
    set_seed(args.seed)
    return args


@entry
def lvae_large_pmnist(override_args=None):
    """Replay-through-feedback's scale for permuted MNIST on the library's defaults (``common.lvae_large_strategy``:
    hidden 1000, every real image every epoch with twice as many replayed rows, classification weight 100)."""
    args = _large_args(override_args)
    return train_and_evaluate(common.lvae_large_strategy(args), common.pmnist(args), args)


@entry
def lvae_large_real_replay_pmnist(override_args=None):
    """``lvae_large_pmnist`` replaying real training images of the past experiences in place of generated ones
    (``benchmarks/real_image_replay.py``): the upper bound of its replay, not a data-free method."""
    args = _large_args(override_args)
    strategy = common.lvae_large_strategy(args)
    import_sibling("real_image_replay").RealImageReplayPlugin.replacing(strategy)
    return train_and_evaluate(strategy, common.pmnist(args), args)


@entry
def lvae_naive_pmnist(override_args=None):
    """``LVAENaive`` on the model of ``lvae_defaults_pmnist``: its training time is the lifelong model's reference."""
    args = create_default_args(dict(_ADAM_MLP), override_args)
    set_seed(args.seed)
    return train_and_evaluate(common.lvae_naive_strategy(args), common.pmnist(args), args)


def _smnist_entry(build, args_dict=None):
    """An entry on split MNIST: ``build(args)`` is the strategy, trained with ``_SMNIST``'s epochs and batch."""

    def run(override_args=None):
        args = create_default_args({**_SMNIST, "drop_rate": 0.5, **(args_dict or {})}, override_args)
        set_seed(args.seed)
        return train_and_evaluate(build(args), common.smnist(args), args)

    return run


def _mlp_entry(strategy_name, **strategy_args):
    """Builds Avalanche's ``strategy_name`` over the MLP, its hyperparameters read from ``args``."""

    def build(args):
        import avalanche.training as training

        return common.mlp_strategy(getattr(training, strategy_name), args,
                                   **{key: getattr(args, value) for key, value in strategy_args.items()})

    return build


# Split MNIST, class-incremental (5 experiences x 2 classes), the MLP entries with the permuted-MNIST
# hyperparameters above; registered under their names as the other entries.
for _name, _build, _extra in [
    ("naive_smnist", _mlp_entry("Naive"), {}),
    ("ewc_smnist", _mlp_entry("EWC", ewc_lambda="ewc_lambda", mode="ewc_mode"),
     dict(drop_rate=0.0, ewc_lambda=1e4, ewc_mode="separate")),
    ("lwf_smnist", _mlp_entry("LwF", alpha="lwf_alpha", temperature="lwf_temperature"),
     dict(lwf_alpha=1.0, lwf_temperature=1.0)),
    ("generative_replay_smnist", common.generative_replay_strategy, {}),
    ("cumulative_smnist", _mlp_entry("Cumulative"), {}),
    ("lvae_smnist", common.lvae_default_strategy, {}),
    ("lvae_naive_smnist", common.lvae_naive_strategy, {}),
]:
    ENTRIES[_name] = _smnist_entry(_build, _extra)
    ENTRIES[_name].__name__ = _name


@entry
def lvae_sfmnist(override_args=None):
    """``LifelongVAEStrategy`` on split FashionMNIST, one class per experience (LGM Exp. 5.1)."""
    from avalanche_lvae.streams import split_fmnist

    args = create_default_args(dict(_LVAE_PAPER, n_experiences=10), override_args)
    set_seed(args.seed)
    benchmark = split_fmnist(n_experiences=args.n_experiences, seed=STREAM_SEED,
                             dataset_root=args.dataset_root, max_train_per_experience=args.max_train_per_experience,
                             max_test_per_experience=args.max_test_per_experience)
    return train_and_evaluate(common.lvae_paper_strategy(args), benchmark, args)


# --------------------------------------------------------------------------- command line
def build_parser():
    p = OneLineErrorParser(prog="leaderboard.py", description=__doc__.splitlines()[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_OVERRIDES}; writes leaderboard_quick.*")
    p.add_argument("--entries", default=",".join(ENTRIES), help="comma list of entries")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--epochs", type=positive_int, default=None, help="override every entry's epochs")
    p.add_argument("--batch-size", type=positive_int, default=None, dest="train_mb_size",
                   help="override every entry's training minibatch size")
    p.add_argument("--n-experiences", type=positive_int, default=None, help="override every entry's stream length")
    p.add_argument("--learning-rate", type=finite_number(positive=True), default=None,
                   help="override every entry's learning rate")
    p.add_argument("--classification-weight", type=finite_number(positive=True), default=None,
                   help="override the classification weight of the lifelong VAE entries that set one")
    p.add_argument("--continuous-dim", type=positive_int, default=None,
                   help="override the size of z_c of lvae_large_pmnist")
    p.add_argument("--continuous-consistency-weight", type=finite_number(positive=False), default=None,
                   help="override the weight of the consistency KL on z_c of the lifelong VAE entries that set one")
    p.add_argument("--replay-size", type=positive_int, default=None,
                   help="override the replayed rows per minibatch of lvae_large_pmnist (twice the batch size)")
    p.add_argument("--component-prior", choices=LifelongVAEStrategy.COMPONENT_PRIORS, default=None,
                   help="override the z_c prior of lvae_large_pmnist's generation (the library's)")
    p.add_argument("--replay-temperature", type=finite_number(positive=True), default=None,
                   help="override the replay reconstruction temperature of lvae_large_pmnist (the library's)")
    p.add_argument("--normalization", choices=LifelongVAE.NORMALIZATIONS, default=None,
                   help="override the normalisation of lvae_large_pmnist's dense layers (the library's)")
    p.add_argument("--component-anchor-weight", type=finite_number(positive=False), default=None,
                   help="override the weight of lvae_large_pmnist's component anchor (the library's)")
    p.add_argument("--max-train-per-experience", type=positive_int, default=None, metavar="N")
    p.add_argument("--max-test-per-experience", type=positive_int, default=None, metavar="N")
    p.add_argument("--out-dir", default=DEFAULT_OUT_DIR)
    p.add_argument("--save-models", default=None, metavar="DIR",
                   help="save each lifelong VAE entry after every experience as DIR/<entry>/model_exp<i>.pt "
                        "(for benchmarks/component_usage.py)")
    p.add_argument("--dataset-root", default=None)
    p.add_argument("--device", default="cpu")
    return p


def main(argv=None) -> int:
    """Run the entries, print and write the table; returns the exit code (0 ok, 2 bad input)."""
    warnings.filterwarnings("ignore", message="No loggers specified")  # no logger is on purpose
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        names = [e.strip() for e in args.entries.split(",") if e.strip()]
        unknown = [e for e in names if e not in ENTRIES]
        if unknown or not names or len(set(names)) != len(names):
            parser.error(f"argument --entries: {args.entries!r} is empty, repeats an entry or names an unknown "
                         f"one; choose from {','.join(ENTRIES)}")
        for key, holders in ENTRY_OVERRIDES.items():
            others = [e for e in names if e not in holders]
            if getattr(args, key) is not None and others:
                flag = "--" + key.replace("_", "-")
                parser.error(f"argument {flag}: {','.join(others)} has no hyperparameter {key}; "
                             f"run it without the flag or choose from {','.join(holders)}")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    overrides = dict(QUICK_OVERRIDES) if args.quick else {}
    for key in ("epochs", "train_mb_size", "n_experiences", "learning_rate", *ENTRY_OVERRIDES,
                "max_train_per_experience", "max_test_per_experience"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    overrides.update(seed=args.seed, dataset_root=args.dataset_root, device=args.device)
    command = command_line(__file__, argv)
    results, started = {}, time.perf_counter()
    try:
        if "gem_pmnist" in names:
            common.require_quadprog()  # before hours of other entries, not after
        for name in names:
            if args.save_models is not None:
                overrides["save_models"] = os.path.join(args.save_models, name)
            results[name] = ENTRIES[name](overrides)
            r = results[name]
            print(f"{name}: accuracy {r['final_avg_accuracy']:.4f}, forgetting {r['final_avg_forgetting']:.4f}, "
                  f"{r['train_seconds']:.1f} s", flush=True)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = common.format_markdown(results, command)
    print("\n" + table)
    stem = os.path.join(args.out_dir, "leaderboard" + ("_quick" if args.quick else ""))
    os.makedirs(args.out_dir, exist_ok=True)
    write_json_atomic(stem + ".json", dict(command=command, overrides=overrides, entries=results,
                                           wall_seconds=time.perf_counter() - started,
                                           torch_threads=torch.get_num_threads()))  # the train seconds' context
    with open(stem + ".md.tmp", "w") as f:
        f.write(table)
    os.replace(stem + ".md.tmp", stem + ".md")
    print(f"wrote {stem}.md and {stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
