"""Why the library's defaults: each default of ``LifelongVAEStrategy`` switched back, one at a time.

On class-incremental Split MNIST (5 experiences x 2 digits), every variant is
``LifelongVAEStrategy(model=LifelongVAE(...), optimizer=Adam(lr=1e-3), **variant)``
at the same epochs and batch, against the library's defaults and the papers'
equations (:mod:`avalanche_lvae.presets`). It writes the final average
accuracy over the five test sets and the training seconds of each variant to
``benchmarks/results/defaults_ablation.json``; ``docs/results.md`` shows them.

Usage (from the repository root, one thread)::

    OMP_NUM_THREADS=1 python benchmarks/defaults_ablation.py
    OMP_NUM_THREADS=1 python benchmarks/defaults_ablation.py --variants defaults,paper --epochs 1
"""

import argparse
import os
import sys
import time

import torch
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lvae import LifelongVAE, LifelongVAEStrategy
from avalanche_lvae.experiments.reproduction import command_line
from avalanche_lvae.experiments.results import write_json_atomic
from avalanche_lvae.presets import PAPER_MODEL, PAPER_STRATEGY
from avalanche_lvae.streams import experience_tensors, split_mnist

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "defaults_ablation.json")

# name: (LifelongVAE arguments, LifelongVAEStrategy arguments), each the defaults but for one setting.
VARIANTS = {
    "defaults": ({}, {}),
    "classifier_on_latent": (dict(classifier_input="latent"), {}),
    "no_distillation": ({}, dict(distillation_temperature=None)),
    "classification_weight_1": ({}, dict(classification_weight=1.0)),
    "classification_weight_100": ({}, dict(classification_weight=100.0)),
    "with_info_restriction": ({}, dict(info_weight=0.01)),
    "loss_weights_mixing": ({}, dict(replay_mixing="loss_weights")),
    "no_continuous_consistency": ({}, dict(continuous_consistency_weight=0.0)),
    "paper_equations": (PAPER_MODEL, PAPER_STRATEGY),
    # Options that stay off by default, each against the variant it differs from in one setting.
    "hard_replay_labels": ({}, dict(distillation_temperature=None, soft_replay_labels=False)),  # vs no_distillation
    # against classifier_on_latent:
    "prior_replay_labels": (dict(classifier_input="latent"), dict(replay_label_source="prior")),
    "forward_consistency_kl": ({}, dict(reverse_kl=False)),
    "fixed_discrete": (dict(discrete_dim=5), dict(grow_discrete=False)),
}


def final_accuracy(model, benchmark) -> float:
    """Average over the test sets of the accuracy of the posterior-mode classifier."""
    model.eval()
    accuracies = []
    with torch.no_grad():
        for experience in benchmark.test_stream:
            x, y = experience_tensors(experience)
            accuracies.append(float((model(x).class_logits.argmax(-1) == y).float().mean()))
    return sum(accuracies) / len(accuracies)


def run_variant(name: str, benchmark, args) -> dict:
    model_kwargs, strategy_kwargs = VARIANTS[name]
    RNGManager.set_random_seeds(args.seed)
    model = LifelongVAE(**model_kwargs)
    strategy = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                                   train_mb_size=args.batch_size, train_epochs=args.epochs, eval_mb_size=1000,
                                   evaluator=EvaluationPlugin(loggers=[]), **strategy_kwargs)
    started = time.perf_counter()
    for experience in benchmark.train_stream:
        strategy.train(experience)
    train_seconds = time.perf_counter() - started
    return dict(final_avg_accuracy=final_accuracy(model, benchmark), train_seconds=train_seconds,
                model_kwargs=dict(model_kwargs), strategy_kwargs=dict(strategy_kwargs))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variants")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train-per-experience", type=int, default=None)
    parser.add_argument("--out", default=RESULTS)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    benchmark = split_mnist(n_experiences=5, max_train_per_experience=args.max_train_per_experience)
    results = {}
    for name in names:
        results[name] = run_variant(name, benchmark, args)
        print(f"{name:<28} {results[name]['final_avg_accuracy']:.3f}  {results[name]['train_seconds']:.0f} s",
              flush=True)
    config = dict(stream="split_mnist", n_experiences=5, epochs=args.epochs, batch_size=args.batch_size,
                  seed=args.seed, max_train_per_experience=args.max_train_per_experience,
                  torch_threads=torch.get_num_threads())
    write_json_atomic(args.out, dict(command=command_line(__file__, argv), config=config, variants=results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
