"""avalanche-lvae: lifelong generative modelling (a VAE with a classifier) for Avalanche.

The public API:

- :class:`LifelongVAE` -- the model (encoder, decoder, classifier, growing z_d);
- :class:`LifelongVAEStrategy` -- the student-teacher strategy (an Avalanche
  ``SupervisedTemplate``);
- :class:`LVAENaive`, :class:`LVAECumulative` -- Avalanche's ``Naive`` and
  ``Cumulative`` training the same model on the same loss (baselines);
- :data:`PAPER_MODEL`, :data:`PAPER_STRATEGY` -- the papers' equations as
  keyword presets, and :data:`ONE_CLASS_PER_EXPERIENCE`, the settings for
  streams of one class per experience (:mod:`avalanche_lvae.presets`);
- :mod:`avalanche_lvae.plugins`, :mod:`avalanche_lvae.losses`,
  :mod:`avalanche_lvae.streams`, :mod:`avalanche_lvae.data`.
"""

# Imported for its side effect: torch optimizers become picklable by dill, so
# Avalanche's save_checkpoint works on every strategy (see checkpoint.py).
from . import checkpoint as _checkpoint  # noqa: F401
from .losses import JointBoundLoss
from .models import LifelongVAE, LVAEOutput
from .presets import ONE_CLASS_PER_EXPERIENCE, PAPER_MODEL, PAPER_STRATEGY
from .strategy import LifelongVAEStrategy
from .training import LVAECumulative, LVAENaive, NonFiniteLossError

__version__ = "0.1.0"

__all__ = [
    "LifelongVAE",
    "LVAEOutput",
    "LifelongVAEStrategy",
    "LVAENaive",
    "LVAECumulative",
    "JointBoundLoss",
    "NonFiniteLossError",
    "PAPER_MODEL",
    "PAPER_STRATEGY",
    "ONE_CLASS_PER_EXPERIENCE",
]
