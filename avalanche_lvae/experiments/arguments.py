"""The flags of ``avalanche-lvae run <stream>``, their checks and one-line errors.

Every mistake a user can make on the command line ends the command with exit
code 2 and a single ``error: ...`` line on stderr (no usage block, no
traceback): :class:`OneLineErrorParser` overrides ``argparse``'s error output
and :func:`check_run_arguments` adds the checks ``argparse`` cannot express.

The flags of the lifelong model (``--classification-weight``,
``--replay-labels``, ...) default to None, meaning "not passed": the
library's defaults of ``LifelongVAE`` / ``LifelongVAEStrategy`` apply (see
:func:`avalanche_lvae.experiments.strategies.lvae_settings`).
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable

import torch

from ..strategy import LifelongVAEStrategy
from .stream_specs import StreamSpec
from .strategies import DEFAULT_STRATEGIES, PRESETS, STRATEGIES

__all__ = [
    "OneLineErrorParser",
    "positive_int",
    "non_negative_int",
    "finite_number",
    "build_run_parser",
    "check_run_arguments",
    "parse_strategy_list",
    "DEFAULT_EWC_LAMBDA",
    "DEFAULT_FD_SAMPLES",
]

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
# Generated images per Frechet distance evaluation: one MNIST test set, as in LGM.
DEFAULT_FD_SAMPLES = 10000
LIBRARY_DEFAULT = " (unset: the library's default)"


def _int_type(minimum: int) -> Callable[[str], int]:
    """An argparse type accepting integers >= ``minimum`` (1: positive, 0: non-negative)."""
    kind = "positive" if minimum == 1 else "non-negative"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
        return value

    return parse


positive_int = _int_type(1)
non_negative_int = _int_type(0)


def finite_number(positive: bool) -> Callable[[str], float]:
    """An argparse type accepting finite numbers >= 0 (> 0 when ``positive``)."""
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


class OneLineErrorParser(argparse.ArgumentParser):
    """``error`` prints one ``error: ...`` line (no usage block) and exits with code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except None (those flags say what unset means)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def _add_lvae_arguments(p: argparse.ArgumentParser) -> None:
    """The lifelong model's flags: None (unset) leaves the library's default in place."""
    number, positive = finite_number(positive=False), finite_number(positive=True)
    p.add_argument("--preset", choices=tuple(PRESETS), default="default",
                   help="the lifelong model's settings that the flags below change: the library's defaults, "
                        "the papers' equations (avalanche_lvae.presets.PAPER_MODEL / PAPER_STRATEGY), or the "
                        "defaults for streams of one class per experience (ONE_CLASS_PER_EXPERIENCE)")
    p.add_argument("--arch", choices=("dense", "conv"), default=None, help="LifelongVAE architecture" + LIBRARY_DEFAULT)
    p.add_argument("--continuous-dim", type=positive_int, default=None, metavar="N",
                   help="size of z_c of every LifelongVAE strategy (lvae, naive, ewc, cumulative); LGM uses 14"
                        + LIBRARY_DEFAULT)
    p.add_argument("--classification-weight", type=number, default=None, metavar="W",
                   help="weight (alpha) of -log p(y|z) in the loss of every LifelongVAE strategy; 1 is the joint "
                        "bound of CCL-GM Eq. 4" + LIBRARY_DEFAULT)
    p.add_argument("--consistency-weight", type=number, default=None, metavar="W",
                   help="lvae only: weight of the z_d consistency KL between teacher and student (LGM Eq. 10)"
                        + LIBRARY_DEFAULT)
    p.add_argument("--info-weight", type=number, default=None, metavar="W",
                   help="lvae only: lambda of L_I (LGM Eq. 9/10; paper 0.01, 0 = off)" + LIBRARY_DEFAULT)
    p.add_argument("--continuous-consistency", type=number, default=None, metavar="W",
                   help="lvae only: weight of the Gaussian consistency KL on z_c (LGM Eq. 11); 0 gives LGM Eq. 10 "
                        "as written" + LIBRARY_DEFAULT)
    p.add_argument("--replay-labels", choices=("prior", "posterior"), default=None,
                   help="lvae only: the teacher labels its replay from the generating z (prior, CCL-GM) or from the "
                        "mode of its posterior of the replayed image (posterior)" + LIBRARY_DEFAULT)
    p.add_argument("--replay-mixing", choices=("loss_weights", "batch_composition"), default=None,
                   help="lvae only: append the teacher's replay and weight the loss 1/(k+1) per distribution "
                        "(loss_weights) or replace k/(k+1) of each minibatch by replay (batch_composition)"
                        + LIBRARY_DEFAULT)
    p.add_argument("--replay-temperature", type=positive, default=None, metavar="T",
                   help="lvae only: the student reconstructs each replayed image towards sigmoid(logits / T) of the "
                        "teacher's decoder; 1 is the papers'" + LIBRARY_DEFAULT)
    p.add_argument("--component-prior", choices=LifelongVAEStrategy.COMPONENT_PRIORS, default=None,
                   help="lvae only: generate distribution j with z_c ~ N(0, I) (standard, the papers) or from a "
                        "Gaussian fitted to the encoder's z_c for j (fitted)" + LIBRARY_DEFAULT)


def build_run_parser(prog: str, spec: StreamSpec) -> argparse.ArgumentParser:
    """The flags of ``run <stream>``; ``spec`` gives the stream's sizes and the baselines' defaults."""
    p = OneLineErrorParser(prog=prog, description=spec.description, formatter_class=_DefaultsHelpFormatter)
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES, help=f"comma-separated list from {','.join(STRATEGIES)}")
    p.add_argument("--n-experiences", type=positive_int, default=spec.n_experiences,
                   help="number of experiences in the stream")
    p.add_argument("--epochs", type=positive_int, default=spec.epochs, help="training epochs per experience")
    p.add_argument("--batch-size", type=positive_int, default=spec.batch_size,
                   help="training and evaluation minibatch size (under torchrun the global training minibatch, "
                        "split evenly among the processes)")
    p.add_argument("--lr", type=finite_number(positive=True), default=1e-3,
                   help="Adam learning rate (may differ on a resume: it is applied to the restored optimizer)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the stream and of every strategy (re-seeded before each model is built)")
    p.add_argument("--dataset-root", default=None,
                   help="folder holding MNIST and FashionMNIST (torchvision layout); unset: $LVAE_DATA_DIR, else the "
                        "library's default location")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--results-json", default=None, metavar="PATH",
                   help="write the results here (atomically, after every strategy finished)")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="log Avalanche metrics with TensorboardLogger(DIR/<strategy>)")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="write accuracy / negative ELBO / Frechet distance curves (PNG) and every sample grid "
                        "(DIR/<strategy>/) there")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="checkpoint every strategy after every experience in DIR/<strategy>/ and, when "
                        "checkpoints exist, resume each strategy from its last complete experience")
    p.add_argument("--no-frechet", action="store_true",
                   help="skip the Frechet distance (and the reference classifier it needs): quicker runs")
    p.add_argument("--fd-samples", type=positive_int, default=DEFAULT_FD_SAMPLES, metavar="N",
                   help="generated images per Frechet distance evaluation")
    p.add_argument("--max-train-per-experience", type=positive_int, default=None, metavar="N",
                   help="keep only N training images per experience (quick runs); unset keeps all")
    p.add_argument("--max-test-per-experience", type=positive_int, default=None, metavar="N",
                   help="keep only N test images per experience; unset keeps all")
    _add_lvae_arguments(p)
    number = finite_number(positive=False)
    p.add_argument("--ewc-lambda", type=number, default=DEFAULT_EWC_LAMBDA,
                   help="EWCPlugin lambda of the ewc strategy (tuned for --batch-size 256)")
    p.add_argument("--si-lambda", type=number, default=spec.si_lambda, help="SynapticIntelligence si_lambda")
    p.add_argument("--si-eps", type=finite_number(positive=True), default=spec.si_eps, help="SynapticIntelligence eps")
    p.add_argument("--lwf-alpha", type=number, default=DEFAULT_LWF_ALPHA, help="LwF alpha")
    p.add_argument("--lwf-temperature", type=finite_number(positive=True), default=DEFAULT_LWF_TEMPERATURE,
                   help="LwF distillation temperature")
    return p


def _check_output_dir(parser: argparse.ArgumentParser, flag: str, path: str) -> None:
    """A folder the command will create: it must not be a file, and its first existing ancestor writable."""
    if os.path.exists(path) and not os.path.isdir(path):
        parser.error(f"argument {flag}: {path} exists and is not a folder")
    ancestor = os.path.abspath(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.access(ancestor, os.W_OK):
        parser.error(f"argument {flag}: cannot create or write {path} ({ancestor} is not writable)")


def parse_strategy_list(parser: argparse.ArgumentParser, text: str, choices) -> list:
    """``text`` split at commas; ``parser.error`` when empty, repeated or unknown."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in choices]
    if not names:
        parser.error(f"argument --strategies: empty list; choose from {','.join(choices)}")
    if unknown:
        parser.error(f"argument --strategies: unknown strategy {', '.join(map(repr, unknown))}; "
                     f"choose from {','.join(choices)}")
    if len(set(names)) != len(names):
        parser.error(f"argument --strategies: {text!r} names a strategy twice")
    return names


def check_run_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flag checks argparse cannot express; calls ``parser.error`` (exit code 2)."""
    args.strategies = parse_strategy_list(parser, args.strategies, STRATEGIES)
    if args.seed >= 2**32:  # numpy's seed range (RNGManager seeds numpy too)
        parser.error(f"argument --seed: must be below 2**32, got {args.seed}")
    if args.results_json is not None:
        folder = os.path.dirname(os.path.abspath(args.results_json))
        if os.path.isdir(args.results_json):
            parser.error(f"argument --results-json: {args.results_json} is a folder; give a file name")
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            parser.error(f"argument --results-json: folder {folder} does not exist or is not writable")
    for flag, path in (("--plots", args.plots), ("--checkpoint-dir", args.checkpoint_dir),
                       ("--tensorboard", args.tensorboard)):
        if path is not None:
            _check_output_dir(parser, flag, path)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"argument --device: not a torch device: {args.device!r} (use e.g. cpu or cuda:0)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device {args.device}: CUDA is not available on this machine; use --device cpu")
