"""Class-incremental Split MNIST: the lifelong VAE next to Avalanche's GenerativeReplay.

Split MNIST as Avalanche's ``SplitMNIST``: 5 experiences of 2 digits each,
one classifier head and no task label at test time (class-incremental), so a
model that only fine-tunes forgets every earlier digit. Both strategies
rehearse without storing data:

- ``LifelongVAEStrategy`` over a ``LifelongVAE``: one network that encodes,
  generates and classifies; its frozen copy (the teacher) replays the earlier
  digits, labelled by its own classifier;
- Avalanche's ``GenerativeReplay`` over a ``SimpleMLP``: a separate VAE
  generator (Avalanche's default, ``MlpVAE``) replays for the classifier.

Both are built from ordinary Avalanche pieces (stream, optimizer,
``EvaluationPlugin``) and trained by the same loop. Run it from the
repository root::

    python examples/split_mnist.py

``avalanche-lvae run split_mnist --strategies lvae,naive,ewc,lwf,gr,cumulative``
compares more strategies and writes results, plots and checkpoints.
"""

import torch
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.models import SimpleMLP
from avalanche.training import GenerativeReplay
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lvae import LifelongVAE, LifelongVAEStrategy
from avalanche_lvae.streams import split_mnist

ACCURACY = "Top1_Acc_Stream/eval_phase/test_stream/Task000"


def train_and_evaluate(strategy, benchmark):
    """Train on each experience, then evaluate on every test set seen so far; the accuracy after each."""
    accuracies = []
    for i, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        accuracies.append(strategy.eval(benchmark.test_stream[: i + 1])[ACCURACY])
    return accuracies


def main(n_experiences=5, epochs=5, batch_size=128, max_train_per_experience=None,
         max_test_per_experience=None, seed=0, device="cpu"):
    """Train both strategies on the same stream; returns ``{strategy: [accuracy after each experience]}``."""
    device = torch.device(device)
    benchmark = split_mnist(n_experiences=n_experiences, seed=seed,
                            max_train_per_experience=max_train_per_experience,
                            max_test_per_experience=max_test_per_experience)
    for i, experience in enumerate(benchmark.train_stream):
        print(f"experience {i}: digits {experience.classes_in_this_experience}")

    def evaluator():  # a fresh one per strategy: the metrics keep state
        return EvaluationPlugin(accuracy_metrics(stream=True), forgetting_metrics(stream=True), loggers=[])

    common = dict(train_mb_size=batch_size, train_epochs=epochs, eval_mb_size=batch_size, device=device)
    results = {}

    # --- the lifelong VAE, with the library's defaults
    RNGManager.set_random_seeds(seed)
    model = LifelongVAE()
    strategy = LifelongVAEStrategy(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                                   evaluator=evaluator(), **common)
    results["LifelongVAEStrategy"] = train_and_evaluate(strategy, benchmark)

    # --- Avalanche's GenerativeReplay, on the MLP of Avalanche's examples
    RNGManager.set_random_seeds(seed)
    model = SimpleMLP(num_classes=10, hidden_size=512, hidden_layers=2)
    strategy = GenerativeReplay(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                                criterion=torch.nn.CrossEntropyLoss(), evaluator=evaluator(), **common)
    results["GenerativeReplay"] = train_and_evaluate(strategy, benchmark)

    print("average accuracy over the digits seen so far, after each experience:")
    for name, accuracies in results.items():
        print(f"{name:<20} " + " ".join(f"{a:.3f}" for a in accuracies))
    return results


if __name__ == "__main__":
    main()
