"""Models: the :class:`LifelongVAE` and its architecture blocks."""

from .lifelong_vae import LifelongVAE, LVAEOutput

__all__ = ["LifelongVAE", "LVAEOutput"]
