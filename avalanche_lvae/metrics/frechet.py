"""Frechet distance between generated and test images (LGM App. 9.10, Eq. 19), as a plugin metric.

    FD = ||mu_g - mu_t||^2 + Tr(S_g + S_t - 2 (S_g S_t)^(1/2))        (Eq. 19)

where (mu, S) are the mean and covariance of the features of a *reference
classifier* trained on the benchmark's data (:mod:`.reference`), for
generated images (g) and for the test images of every evaluated experience (t).
The formula itself is ``pytorch_fid.fid_score.calculate_frechet_distance``.
"""

from typing import List, Optional, Tuple

import numpy as np
import torch
from avalanche.evaluation import GenericPluginMetric, Metric
from pytorch_fid.fid_score import calculate_frechet_distance
from torch import nn

from ..models import LifelongVAE
from ..validation import check_positive_int
from .utils import evaluation_mode, generate, require_generator

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "FrechetDistance",
    "FrechetDistancePluginMetric",
    "frechet_distance_metrics",
]


def feature_statistics(features: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (unbiased, float64) of ``features`` ``[N, D]``."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors [N, D], got shape {tuple(features.shape)}.")
    if not torch.isfinite(features).all():
        # e.g. a diverged generator's NaN images; scipy's sqrtm would fail with an internal error.
        raise ValueError("features contain NaN or infinite values (are the generated or test images finite?).")
    data = features.detach().cpu().double().numpy()
    return data.mean(axis=0), np.cov(data, rowvar=False)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance (LGM Eq. 19) between the Gaussians fitted to two feature sets ``[N, D]``, ``[M, D]``.

    Computed in float64 by ``pytorch_fid``'s ``calculate_frechet_distance``.
    Like every FD it is biased upwards for small N, M: compare values only at
    equal sample sizes; with N < D the covariances are singular and
    pytorch_fid regularises them.
    """
    if features_a.dim() != 2 or features_b.dim() != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(
            f"features must be [N, D] and [M, D] with the same D, got {tuple(features_a.shape)} and "
            f"{tuple(features_b.shape)}."
        )
    mu_a, sigma_a = feature_statistics(features_a)
    mu_b, sigma_b = feature_statistics(features_b)
    return float(calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b))


class FrechetDistance(Metric[float]):
    """Collects reference features of test and of generated images; :meth:`result` is one FD over all of them."""

    def __init__(self):
        self._test: List[torch.Tensor] = []
        self._generated: List[torch.Tensor] = []

    def update(self, test_features: Optional[torch.Tensor] = None,
               generated_features: Optional[torch.Tensor] = None) -> None:
        """Add feature rows ``[N, D]`` of test and/or generated images (kept on the CPU)."""
        if test_features is not None:
            self._test.append(test_features.detach().cpu())
        if generated_features is not None:
            self._generated.append(generated_features.detach().cpu())

    def result(self) -> Optional[float]:
        """The FD between all test and all generated features, or None while either set is empty."""
        if not self._test or not self._generated:
            return None
        return frechet_distance(torch.cat(self._generated), torch.cat(self._test))

    def reset(self) -> None:
        """Forget every feature."""
        self._test, self._generated = [], []


class FrechetDistancePluginMetric(GenericPluginMetric[Optional[float], FrechetDistance]):
    """Frechet distance between samples of ``strategy.model`` and the evaluated test stream.

    During ``strategy.eval(stream)`` the reference features of every test
    minibatch (``strategy.mb_x``) are collected; after the stream, ``n_samples``
    images are generated -- for a ``LifelongVAE`` spread evenly over its
    ``discrete_dim`` z_d components with z_c ~ N(0, I) (for the lifelong model
    one component per distribution seen so far; baselines built with the final
    J sample all J components, their prior) -- and ONE Frechet distance is
    computed between all generated and all test features. The authors' code
    averages FDs over small chunks instead, which is biased upwards
    (docs/method.md); values here are not comparable with those chunked ones.

    Emitted once per eval stream as ``FrechetDistance_Stream/eval_phase/<stream>/Task<t>``.

    Args:
        reference: a trained classifier with a ``features(x)`` method (e.g.
            :func:`~avalanche_lvae.metrics.reference_classifier`); moved to the
            strategy's device.
        n_samples: generated images per evaluation (default 10000, the size of
            one MNIST test set; more samples lower the FD's bias).
        batch_size: images featurised (and generated) at once.

    Raises:
        ValueError: at ``before_eval``, when the strategy's model cannot
            generate (not a ``LifelongVAE`` and no ``.sample(n)``), e.g. ``SimpleMLP``.
    """

    def __init__(self, reference: nn.Module, n_samples: int = 10000, batch_size: int = 1000):
        if not callable(getattr(reference, "features", None)):
            raise ValueError(
                f"reference must have a features(x) method (e.g. avalanche_lvae.metrics.ReferenceClassifier), "
                f"got {type(reference).__name__}."
            )
        self.reference = reference
        self.n_samples = check_positive_int(n_samples, "n_samples")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        super().__init__(FrechetDistance(), reset_at="stream", emit_at="stream", mode="eval")

    def _features(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        with evaluation_mode(self.reference):
            return torch.cat([self.reference.features(b.to(device)) for b in images.split(self.batch_size)])

    def before_eval(self, strategy) -> None:
        # Fail before a long evaluation, not after it.
        require_generator(strategy.model, "FrechetDistancePluginMetric")
        self.reference.to(strategy.device)
        super().before_eval(strategy)

    def update(self, strategy) -> None:
        self._metric.update(test_features=self._features(strategy.mb_x, strategy.device))

    def after_eval(self, strategy):
        model = require_generator(strategy.model, "FrechetDistancePluginMetric")
        features = [self._features(images, strategy.device) for images in self._generated_batches(model)]
        self._metric.update(generated_features=torch.cat(features))
        return super().after_eval(strategy)

    def _generated_batches(self, model: nn.Module) -> List[torch.Tensor]:
        """``n_samples`` generated images (CPU) in batches of at most ``batch_size``."""
        if not isinstance(model, LifelongVAE):
            return [generate(model, min(self.batch_size, self.n_samples - start)).cpu()
                    for start in range(0, self.n_samples, self.batch_size)]
        # One prior draw for all rows, so that the components get exactly equal
        # shares (LGM Sec. 4.3), decoded batch by batch.
        with evaluation_mode(model):
            z_c, z_d, _ = model.sample_latent(self.n_samples)
            return [torch.sigmoid(model.decode(zc, zd)).cpu()
                    for zc, zd in zip(z_c.split(self.batch_size), z_d.split(self.batch_size))]

    def __str__(self):
        return "FrechetDistance_Stream"


def frechet_distance_metrics(reference: nn.Module, n_samples: int = 10000,
                             batch_size: int = 1000) -> List[FrechetDistancePluginMetric]:
    """Plugin metrics for the Frechet distance of LGM Eq. 19 (see :class:`FrechetDistancePluginMetric`).

    Example::

        ref = reference_classifier("permuted_mnist5", bm.train_stream, bm.test_stream)
        EvaluationPlugin(*frechet_distance_metrics(ref, n_samples=10000), loggers=[...])
    """
    return [FrechetDistancePluginMetric(reference, n_samples=n_samples, batch_size=batch_size)]
