"""Generative metrics as Avalanche plugin metrics (docs/method.md).

Every metric is an Avalanche ``PluginMetric``: pass the lists returned by the
``*_metrics`` helpers to an ``EvaluationPlugin``; the values appear in the
dict returned by ``strategy.eval(...)`` and in every logger.

- :func:`neg_elbo_metrics` -- negative test ELBO in nats per sample (or the
  importance-weighted bound), per experience and per stream;
- :func:`frechet_distance_metrics` -- Frechet distance (LGM Eq. 19) between
  the features of a :func:`reference_classifier` on generated and test images;
- :func:`generated_samples_metrics` -- image grids: samples, one row per z_d
  value, and test reconstructions (TensorBoard images, optional PNG files);
- :func:`component_purity_metrics` -- the fraction of each z_d row's samples
  that the reference classifier assigns to that row's distribution;
- :func:`consistency_metrics` -- agreement of argmax q(z_d|x) between teacher
  and student on past test data.

The metrics need a :class:`~avalanche_lvae.models.LifelongVAE` (the Frechet
distance: any model with ``.sample(n)``) and raise a ``ValueError`` naming the
problem for a model that cannot encode or generate (e.g. ``SimpleMLP``).
Each does its own forward pass under ``torch.no_grad()`` in eval mode,
restores the model's train/eval flag, and draws its random numbers from a
fork of the RNG (:func:`~avalanche_lvae.metrics.utils.evaluation_mode`), so
that switching a metric on does not change the training run.
"""

from .consistency import ZdConsistencyPluginMetric, consistency_metrics
from .elbo import (
    ExperienceNegELBO,
    NegELBO,
    StreamNegELBO,
    importance_weighted_bound,
    neg_elbo_metrics,
    negative_elbo,
)
from .frechet import (
    FrechetDistance,
    FrechetDistancePluginMetric,
    feature_statistics,
    frechet_distance,
    frechet_distance_metrics,
)
from .purity import ComponentPurity, ComponentPurityPluginMetric, component_purity, component_purity_metrics
from .reference import (
    CACHE_ENV_VAR,
    ReferenceClassifier,
    classifier_accuracy,
    default_cache_dir,
    reference_classifier,
    train_reference_classifier,
)
from .samples import GeneratedSamplesPluginMetric, ReconstructionsPluginMetric, generated_samples_metrics

__all__ = [
    "neg_elbo_metrics",
    "negative_elbo",
    "importance_weighted_bound",
    "NegELBO",
    "ExperienceNegELBO",
    "StreamNegELBO",
    "frechet_distance_metrics",
    "frechet_distance",
    "feature_statistics",
    "FrechetDistance",
    "FrechetDistancePluginMetric",
    "ReferenceClassifier",
    "reference_classifier",
    "train_reference_classifier",
    "classifier_accuracy",
    "default_cache_dir",
    "CACHE_ENV_VAR",
    "generated_samples_metrics",
    "GeneratedSamplesPluginMetric",
    "ReconstructionsPluginMetric",
    "component_purity_metrics",
    "component_purity",
    "ComponentPurity",
    "ComponentPurityPluginMetric",
    "consistency_metrics",
    "ZdConsistencyPluginMetric",
]
