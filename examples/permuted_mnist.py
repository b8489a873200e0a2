"""Permuted MNIST with the lifelong VAE, evaluated like any Avalanche strategy.

Permuted MNIST (LGM Exp. 5.2, CCL-GM Sec. 3): experience 0 is MNIST, every
later experience a fixed permutation of its pixels; each holds all ten digits
(domain-incremental, one classifier head).

The example builds

- the stream (``avalanche_lvae.streams.permuted_mnist``: pixels in [0, 1],
  which a Bernoulli decoder can model, unlike Avalanche's normalised ones);
- the model (``LifelongVAE``: encoder, decoder and classifier over a
  continuous latent z_c and a discrete z_d that gains one value per experience);
- the strategy (``LifelongVAEStrategy``: before each new experience the model
  is copied into a frozen teacher, which replays generated images of every
  earlier experience while the student learns the new one);
- an Avalanche ``EvaluationPlugin`` with Avalanche's accuracy and forgetting
  and the package's generative metrics: the negative test ELBO and the Frechet
  distance between generated and test images,

then trains experience by experience. Run it from the repository root::

    python examples/permuted_mnist.py

``avalanche-lvae run permuted_mnist`` runs the same stream with Avalanche's
strategies next to the lifelong VAE and writes results, plots and checkpoints.
"""

import torch
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lvae import LifelongVAE, LifelongVAEStrategy
from avalanche_lvae.metrics import frechet_distance_metrics, neg_elbo_metrics, reference_classifier
from avalanche_lvae.streams import permuted_mnist


def main(n_experiences=5, epochs=2, batch_size=256, max_train_per_experience=None,
         max_test_per_experience=None, fd_samples=10000, seed=0, device="cpu"):
    """Train and evaluate on the stream; returns the metrics of the last evaluation."""
    RNGManager.set_random_seeds(seed)  # torch, numpy and random, as Avalanche seeds them
    device = torch.device(device)

    # --- BENCHMARK
    benchmark = permuted_mnist(n_experiences=n_experiences, seed=seed,
                               max_train_per_experience=max_train_per_experience,
                               max_test_per_experience=max_test_per_experience)

    # --- REFERENCE CLASSIFIER of the Frechet distance: a small CNN trained on the
    # stream's data (LGM App. 9.10), trained once and then loaded from its cache
    # file; the name identifies the data it learns.
    name = f"permuted_mnist{n_experiences}"
    if max_train_per_experience is not None:
        name += f"_train{max_train_per_experience}"
    reference = reference_classifier(name, benchmark.train_stream, benchmark.test_stream,
                                     seed=seed, epochs=1, device=device)

    # --- MODEL AND STRATEGY
    model = LifelongVAE()  # the library's defaults: dense layers, z_c of 14 values, z_d starting at 1
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        neg_elbo_metrics(),  # nats per test image, lower is better
        frechet_distance_metrics(reference, n_samples=fd_samples, batch_size=min(1000, fd_samples)),
        loggers=[InteractiveLogger()],
    )
    strategy = LifelongVAEStrategy(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        train_mb_size=batch_size,
        train_epochs=epochs,
        eval_mb_size=batch_size,
        device=device,
        evaluator=evaluator,
    )

    # --- TRAINING LOOP: train on each experience, then evaluate on every test set seen so far
    for i, experience in enumerate(benchmark.train_stream):
        print(f"--- experience {i}: {len(experience.dataset)} training images")
        strategy.train(experience)
        results = strategy.eval(benchmark.test_stream[: i + 1])

    def final(metric):
        return results[f"{metric}/eval_phase/test_stream/Task000"]

    print(f"after {n_experiences} experiences: average accuracy {final('Top1_Acc_Stream'):.4f}, "
          f"-ELBO {final('NegELBO_Stream'):.1f} nats, Frechet distance {final('FrechetDistance_Stream'):.2f}")
    return results


if __name__ == "__main__":
    main()
