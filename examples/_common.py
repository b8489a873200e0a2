"""Shared command line, strategy zoo and result writing for the example scripts.

``permuted_mnist.py`` and ``split_fmnist.py`` differ only in the benchmark they
build and a few defaults; everything else lives here:

- :func:`build_parser` / :func:`run_cli`: the flags, their validation, the
  error handling (exit code 2 and one ``error: ...`` line, no traceback);
- :func:`make_strategy`: one Avalanche strategy per name in :data:`STRATEGIES`;
- :func:`run_strategy`: train experience by experience, evaluate on the test
  experiences seen so far, collect accuracy / forgetting / negative ELBO;
- :func:`test_neg_elbo`: the negative test ELBO of a ``LifelongVAE``
  (to be replaced by the package's metrics module);
- :func:`write_json_atomic` and :func:`format_table`.

Strategies (all share the seed: ``RNGManager.set_random_seeds(seed)`` is called
before each model is built, so a strategy gives the same numbers whether it
runs alone or after others):

=========== ===================================================================
lvae        ``LifelongVAEStrategy`` over ``LifelongVAE(discrete_dim=1)`` (z_d grows)
naive       ``LVAENaive`` over ``LifelongVAE(discrete_dim=n_experiences)`` (vae-cl)
ewc         ``naive`` + Avalanche's ``EWCPlugin(ewc_lambda, mode="separate")``
cumulative  ``LVAECumulative`` over ``LifelongVAE(discrete_dim=n_experiences)``
gr          Avalanche's ``GenerativeReplay`` over ``SimpleMLP``
lwf         Avalanche's ``LwF`` over ``SimpleMLP``
si          Avalanche's ``SynapticIntelligence`` over ``SimpleMLP``
=========== ===================================================================

``SimpleMLP`` is ``SimpleMLP(num_classes=10, input_size=784, hidden_size=512,
hidden_layers=2)`` (Avalanche's default dropout 0.5) trained with
``CrossEntropyLoss``; every strategy uses Adam with ``--lr``. ``gr`` uses the
generator ``GenerativeReplay`` builds by default (``MlpVAE``, nhid=2), built
here only to drop its InteractiveLogger; note that Avalanche's ``MlpVAE``
decoder maps its sigmoid through ``Normalize(0.1307, 0.3081)``, i.e. it was
written for normalised MNIST, but its output range [-0.42, 2.82] covers the
[0, 1] pixels of our streams, so it trains and replays fine.

After each experience ``i`` the strategy is evaluated on
``test_stream[: i + 1]`` with Avalanche's ``accuracy_metrics`` and
``forgetting_metrics`` (experience and stream level). ``--results-json`` gets::

    {"benchmark": "permuted_mnist" | "split_fmnist",
     "config": {every flag},
     "results": {STRATEGY: {
        "final_avg_accuracy": float,          # Top1_Acc_Stream after the last experience
        "final_avg_forgetting": float,        # StreamForgetting after the last experience
        "accuracy_per_experience": [[acc on exp j after training exp i, j <= i] for i],
        "final_neg_elbo": float | null,       # null for gr / lwf / si (no generative model)
        "neg_elbo_per_experience": [float] | null,  # over the seen test sets, after each exp
        "train_seconds": float,               # wall time inside strategy.train() only
        "peak_rss_mb": float}}}               # process peak so far (includes earlier strategies)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence

import torch

STRATEGIES = ("lvae", "naive", "ewc", "gr", "lwf", "si", "cumulative")
DEFAULT_STRATEGIES = "lvae,naive,ewc,gr"
GENERATIVE = ("lvae", "naive", "ewc", "cumulative")  # strategies whose model has an ELBO

# EWC lambda for the LifelongVAE (Avalanche's penalty: lambda * sum F (theta - theta*)^2,
# F = mean over minibatches of the squared gradient of the minibatch-mean joint
# bound, so F and hence the right lambda depend on --batch-size). Measured on
# permuted MNIST, 2 experiences x 10k images, 1 epoch, batch 256, seed 0:
#   lambda   acc exp0 / exp1   -ELBO   penalty / loss at the end of exp 1
#   1        0.125 / 0.709     251     0.2 / 180  (= naive)
#   1e3      0.184 / 0.711     226     32 / 185
#   1e4      0.433 / 0.641     243     53 / 245
#   1e5      0.551 / 0.246     290     36 / 348  (cannot learn the new task)
DEFAULT_EWC_LAMBDA = 1e4
# LwF as in the continual-learning-baselines permuted/split MNIST scripts.
DEFAULT_LWF_ALPHA = 1.0
DEFAULT_LWF_TEMPERATURE = 1.0


class CLIError(Exception):
    """A user mistake that should end the script with exit code 2 and one line."""


# ------------------------------------------------------------------ command line
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _float_type(positive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            kind = "positive" if positive else "non-negative"
            raise argparse.ArgumentTypeError(f"expected a finite {kind} number, got {text!r}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    """``error`` prints one ``error: ...`` line (no usage block) and exits with code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(prog: str, description: str, *, default_n_experiences: int, default_epochs: int,
                 default_si_lambda: float, default_si_eps: float) -> argparse.ArgumentParser:
    """The flags common to every example script (defaults differ per benchmark)."""
    p = _Parser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                   help=f"comma-separated list from {','.join(STRATEGIES)}")
    p.add_argument("--n-experiences", type=_positive_int, default=default_n_experiences,
                   help="number of experiences in the stream")
    p.add_argument("--epochs", type=_positive_int, default=default_epochs, help="training epochs per experience")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="training and evaluation minibatch size")
    p.add_argument("--lr", type=_float_type(positive=True), default=1e-3, help="Adam learning rate")
    p.add_argument("--arch", choices=("dense", "conv"), default="dense", help="LifelongVAE architecture")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the stream and of every strategy (re-seeded before each model is built)")
    p.add_argument("--dataset-root", default=None,
                   help="folder holding MNIST/raw and FashionMNIST/raw; None means $LVAE_DATA_DIR, "
                        "else ../shared/datasets")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--results-json", default=None, metavar="PATH",
                   help="write the results here (atomically, after every strategy finished)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="log Avalanche metrics with TensorboardLogger(DIR/<strategy>)")
    p.add_argument("--max-train-per-experience", type=_positive_int, default=None, metavar="N",
                   help="keep only N training images per experience (quick runs); None keeps all")
    p.add_argument("--max-test-per-experience", type=_positive_int, default=None, metavar="N",
                   help="keep only N test images per experience; None keeps all")
    p.add_argument("--classification-weight", type=_float_type(positive=False), default=1.0,
                   help="weight of -log p(y|z) in the loss of every LifelongVAE strategy (1 = the joint "
                        "bound of CCL-GM Eq. 4; larger trades ELBO for accuracy)")
    p.add_argument("--continuous-consistency", type=_float_type(positive=False), default=0.0,
                   help="lvae only: weight of the Gaussian consistency KL on z_c (LGM Eq. 11; 0 = Eq. 10)")
    p.add_argument("--ewc-lambda", type=_float_type(positive=False), default=DEFAULT_EWC_LAMBDA,
                   help="EWCPlugin lambda of the ewc strategy (tuned for --batch-size 256)")
    p.add_argument("--si-lambda", type=_float_type(positive=False), default=default_si_lambda,
                   help="SynapticIntelligence si_lambda")
    p.add_argument("--si-eps", type=_float_type(positive=True), default=default_si_eps,
                   help="SynapticIntelligence eps")
    p.add_argument("--lwf-alpha", type=_float_type(positive=False), default=DEFAULT_LWF_ALPHA, help="LwF alpha")
    p.add_argument("--lwf-temperature", type=_float_type(positive=True), default=DEFAULT_LWF_TEMPERATURE,
                   help="LwF distillation temperature")
    return p


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag checks argparse cannot express; calls ``parser.error`` (exit code 2)."""
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        parser.error(f"argument --strategies: unknown strategy {', '.join(map(repr, unknown)) or '(none given)'}; "
                     f"choose from {','.join(STRATEGIES)}")
    if len(set(names)) != len(names):
        parser.error(f"argument --strategies: {args.strategies!r} names a strategy twice")
    args.strategies = names
    if args.seed >= 2**32:  # numpy's seed range (RNGManager seeds numpy too)
        parser.error(f"argument --seed: must be below 2**32, got {args.seed}")
    if args.results_json is not None:
        folder = os.path.dirname(os.path.abspath(args.results_json))
        if os.path.isdir(args.results_json):
            parser.error(f"argument --results-json: {args.results_json} is a folder; give a file name")
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            parser.error(f"argument --results-json: folder {folder} does not exist or is not writable")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"argument --device: not a torch device: {args.device!r} (use e.g. cpu or cuda:0)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device {args.device}: CUDA is not available on this machine; use --device cpu")


# ------------------------------------------------------------------ strategies
def _evaluator(tb_dir: Optional[str]):
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.training.plugins import EvaluationPlugin

    loggers = []
    if tb_dir is not None:
        from avalanche.logging import TensorboardLogger

        loggers.append(TensorboardLogger(tb_dir))
    return EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                            forgetting_metrics(experience=True, stream=True), loggers=loggers)


def _quiet_generator_strategy(args, device):
    """The generator Avalanche's ``GenerativeReplay`` builds by default, without its InteractiveLogger.

    Same model (``MlpVAE((1, 28, 28), nhid=2)``), optimizer (Adam, lr 0.01,
    weight decay 1e-4), loss (``VAE_loss``), plugin and minibatch sizes as
    ``GenerativeReplay.__init__`` with ``generator_strategy=None``.
    """
    from avalanche.models import MlpVAE, VAE_loss
    from avalanche.training import VAETraining
    from avalanche.training.plugins import EvaluationPlugin, GenerativeReplayPlugin

    generator = MlpVAE((1, 28, 28), nhid=2, device=device)
    optimizer = torch.optim.Adam([p for p in generator.parameters() if p.requires_grad], lr=0.01, weight_decay=1e-4)
    return VAETraining(model=generator, optimizer=optimizer, criterion=VAE_loss, train_mb_size=args.batch_size,
                       train_epochs=args.epochs, eval_mb_size=args.batch_size, device=device,
                       plugins=[GenerativeReplayPlugin()], evaluator=EvaluationPlugin(loggers=[]))


def make_strategy(name: str, args, n_classes: int, tb_dir: Optional[str] = None):
    """Build strategy ``name`` (model seeded with ``args.seed``); returns ``(strategy, is_generative)``."""
    from avalanche.models import SimpleMLP
    from avalanche.training import GenerativeReplay, LwF, SynapticIntelligence
    from avalanche.training.determinism.rng_manager import RNGManager
    from avalanche.training.plugins import EWCPlugin

    from avalanche_lvae import JointBoundLoss, LifelongVAE, LifelongVAEStrategy, LVAECumulative, LVAENaive

    RNGManager.set_random_seeds(args.seed)
    device = torch.device(args.device)
    common = dict(train_mb_size=args.batch_size, train_epochs=args.epochs, eval_mb_size=args.batch_size,
                  device=device, evaluator=_evaluator(tb_dir))
    if name in GENERATIVE:
        model = LifelongVAE(input_shape=(1, 28, 28), num_classes=n_classes, arch=args.arch,
                            discrete_dim=1 if name == "lvae" else args.n_experiences)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        common["criterion"] = JointBoundLoss(classification_weight=args.classification_weight)
        if name == "lvae":
            return LifelongVAEStrategy(model=model, optimizer=optimizer,
                                       continuous_consistency_weight=args.continuous_consistency, **common), True
        if name == "cumulative":
            return LVAECumulative(model=model, optimizer=optimizer, **common), True
        plugins = [EWCPlugin(ewc_lambda=args.ewc_lambda, mode="separate")] if name == "ewc" else None
        return LVAENaive(model=model, optimizer=optimizer, plugins=plugins, **common), True

    model = SimpleMLP(num_classes=n_classes, input_size=28 * 28, hidden_size=512, hidden_layers=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = torch.nn.CrossEntropyLoss()
    if name == "gr":
        return GenerativeReplay(model=model, optimizer=optimizer, criterion=criterion,
                                generator_strategy=_quiet_generator_strategy(args, device), **common), False
    if name == "lwf":
        return LwF(model=model, optimizer=optimizer, criterion=criterion, alpha=args.lwf_alpha,
                   temperature=args.lwf_temperature, **common), False
    if name == "si":
        return SynapticIntelligence(model=model, optimizer=optimizer, criterion=criterion,
                                    si_lambda=args.si_lambda, eps=args.si_eps, **common), False
    raise ValueError(f"unknown strategy {name!r}; choose from {','.join(STRATEGIES)}")


# ------------------------------------------------------------------ evaluation
def test_neg_elbo(model, experiences, device, batch_size: int) -> float:
    """Negative test ELBO (nats per image) of a ``LifelongVAE`` over all samples of ``experiences``.

    One sample of z ~ q(z|x) per image (``model(x, sample=True)`` in eval
    mode), averaged over every test image of the given experiences.
    """
    from torch.utils.data import DataLoader

    from avalanche_lvae.losses import negative_joint_bound

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for experience in experiences:
                for batch in DataLoader(experience.dataset.eval(), batch_size=batch_size, shuffle=False):
                    x = batch[0].to(device)
                    total += float(negative_joint_bound(model(x, sample=True), x).negative_elbo.sum())
                    count += x.shape[0]
    finally:
        model.train(was_training)
    return total / count


test_neg_elbo.__test__ = False  # a helper, not a pytest test, even when a test module imports it


def _metric(metrics: Dict[str, float], prefix: str, suffix: str = "") -> float:
    """The one value of ``metrics`` whose key starts with ``prefix`` and ends with ``suffix``."""
    found = [v for k, v in metrics.items() if k.startswith(prefix) and k.endswith(suffix)]
    if len(found) != 1:
        raise KeyError(f"expected one metric {prefix}*{suffix}, found {len(found)} in {sorted(metrics)}")
    return float(found[0])


def run_strategy(name: str, benchmark, args, n_classes: int, progress: bool = True) -> dict:
    """Train ``name`` on ``benchmark.train_stream`` and evaluate after every experience."""
    from tqdm import tqdm

    tb_dir = None if args.tensorboard is None else os.path.join(args.tensorboard, name)
    strategy, generative = make_strategy(name, args, n_classes, tb_dir)
    accuracy_rows: List[List[float]] = []
    neg_elbos: List[float] = []
    train_seconds = 0.0
    metrics: Dict[str, float] = {}
    n_exp = len(benchmark.train_stream)
    bar = tqdm(benchmark.train_stream, desc=f"{name:>10}", unit="exp", total=n_exp,
               disable=not progress, file=sys.stderr, leave=True)
    for i, experience in enumerate(bar):
        start = time.perf_counter()
        strategy.train(experience)
        train_seconds += time.perf_counter() - start
        seen = benchmark.test_stream[: i + 1]
        metrics = strategy.eval(seen)
        accuracy_rows.append([_metric(metrics, "Top1_Acc_Exp/eval_phase/test_stream/", f"/Exp{j:03d}")
                              for j in range(i + 1)])
        postfix = {"acc": f"{_metric(metrics, 'Top1_Acc_Stream/eval_phase/test_stream'):.3f}"}
        if generative:
            neg_elbos.append(test_neg_elbo(strategy.model, seen, strategy.device, args.batch_size))
            postfix["-elbo"] = f"{neg_elbos[-1]:.1f}"
        bar.set_postfix(postfix)
    bar.close()
    return {
        "final_avg_accuracy": _metric(metrics, "Top1_Acc_Stream/eval_phase/test_stream"),
        "final_avg_forgetting": _metric(metrics, "StreamForgetting/eval_phase/test_stream"),
        "accuracy_per_experience": accuracy_rows,
        "final_neg_elbo": neg_elbos[-1] if generative else None,
        "neg_elbo_per_experience": neg_elbos if generative else None,
        "train_seconds": train_seconds,
        # Process-wide peak so far: it includes every strategy run before this one.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# ------------------------------------------------------------------ output
def format_table(results: Dict[str, dict]) -> str:
    head = f"{'strategy':<11} {'avg acc':>8} {'forgetting':>10} {'-ELBO':>8} {'train s':>9} {'peak MB':>8}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        elbo = "-" if r["final_neg_elbo"] is None else f"{r['final_neg_elbo']:.1f}"
        lines.append(f"{name:<11} {r['final_avg_accuracy']:>8.4f} {r['final_avg_forgetting']:>10.4f} "
                     f"{elbo:>8} {r['train_seconds']:>9.1f} {r['peak_rss_mb']:>8.0f}")
    return "\n".join(lines)


def write_json_atomic(path: str, payload: dict) -> None:
    """Write ``payload`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------ main
def run_cli(argv: Optional[Sequence[str]], parser: argparse.ArgumentParser, benchmark_name: str,
            make_benchmark: Callable[[argparse.Namespace], object], n_classes: int = 10) -> int:
    """Parse ``argv``, run every strategy, print the table, write the JSON; return the exit code.

    Never raises ``SystemExit``: ``--help`` returns 0, bad flags return 2
    (argparse's usage + ``error:`` line), a ``ValueError`` / ``FileNotFoundError``
    from the package (bad sizes, missing dataset) returns 2 with one
    ``error: ...`` line, a non-finite training loss returns 1.
    """
    # Two import/setup-time warnings that say nothing about this run.
    warnings.filterwarnings("ignore", message="no QP solver found")  # avalanche's GEM import
    warnings.filterwarnings("ignore", message="No loggers specified")  # no logger is on purpose
    from avalanche_lvae import NonFiniteLossError

    try:
        args = parser.parse_args(argv)
        _check_args(parser, args)
    except SystemExit as exc:  # argparse: --help (0) or parser.error (2)
        return exc.code if isinstance(exc.code, int) else 2
    config = {k: v for k, v in vars(args).items()}
    try:
        benchmark = make_benchmark(args)
        results = {}
        for name in args.strategies:
            results[name] = run_strategy(name, benchmark, args, n_classes)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"\n{benchmark_name}: {args.n_experiences} experiences, {args.epochs} epoch(s) each, seed {args.seed}")
    print(format_table(results))
    if args.results_json:
        write_json_atomic(args.results_json, {"benchmark": benchmark_name, "config": config, "results": results})
        print(f"results written to {args.results_json}")
    return 0
