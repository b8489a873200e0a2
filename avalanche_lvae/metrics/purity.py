"""Row purity of the sample grid: does each z_d value generate its own distribution?

LGM Sec. 4.3 generates a past distribution by fixing its z_d value and
drawing z_c ~ N(0, I). The sample grid (:mod:`.samples`) shows this by eye;
this metric measures it. For each component j, ``n_per_component`` images are
generated and labelled by the reference classifier (:mod:`.reference`, trained
with ``per_distribution=True``, so its class ``e * num_classes + y`` names the
experience e). The purity of row j is the fraction labelled with experience j.
For the lifelong model, z_d value j was added for experience j, so 1.0 means
every row shows its own distribution. The reference's own test accuracy bounds
what can be reached, and chance is 1/J.
"""

from typing import List

import torch
from avalanche.evaluation import GenericPluginMetric, Metric
from torch import nn

from ..validation import check_positive_int
from .utils import evaluation_mode, require_lifelong_vae

__all__ = ["ComponentPurity", "ComponentPurityPluginMetric", "component_purity", "component_purity_metrics"]


@torch.no_grad()
def component_purity(model, reference: nn.Module, num_classes: int, n_per_component: int = 500,
                     batch_size: int = 1000) -> List[float]:
    """Per z_d value j, the fraction of its samples the reference assigns to experience j.

    Args:
        model: a ``LifelongVAE`` whose z_d value j stands for experience j.
        reference: a classifier over ``experiences * num_classes`` (distribution, class) pairs.
        num_classes: classes per experience in the reference's targets.
        n_per_component: images generated per z_d value.
    """
    model = require_lifelong_vae(model, "component_purity")
    check_positive_int(num_classes, "num_classes")
    check_positive_int(n_per_component, "n_per_component")
    device = model.temperature.device
    purity = []
    # evaluation_mode forks the RNG: adding this metric must not change how the strategy trains.
    with evaluation_mode(model, reference):
        for component in range(model.discrete_dim):
            images, _ = model.sample(n_per_component, component=component)
            logits = torch.cat([reference(b.to(device)) for b in images.split(batch_size)])
            if logits.shape[1] < model.discrete_dim * num_classes:
                raise ValueError(
                    f"the reference classifier has {logits.shape[1]} outputs, fewer than discrete_dim * num_classes "
                    f"= {model.discrete_dim * num_classes}: train it with per_distribution=True on the whole stream."
                )
            purity.append((logits.argmax(-1) // num_classes == component).float().mean().item())
    return purity


class ComponentPurity(Metric[List[float]]):
    """Holds the last per-component purities; :meth:`result` is their mean (None before any)."""

    def __init__(self):
        self.per_component: List[float] = []

    def update(self, per_component: List[float]) -> None:
        """Store the purities of one evaluation."""
        self.per_component = list(per_component)

    def result(self):
        """Mean purity over the components, or None before the first update."""
        return sum(self.per_component) / len(self.per_component) if self.per_component else None

    def reset(self) -> None:
        """Forget the stored purities."""
        self.per_component = []


class ComponentPurityPluginMetric(GenericPluginMetric[float, ComponentPurity]):
    """Mean row purity of the lifelong model's samples after each evaluation stream (see module docstring).

    Emitted as ``ComponentPurity_Stream/eval_phase/<stream>/Task<t>``; the
    per-component values stay in ``self.per_component`` for plots and tables.
    Meaningful only for a model whose z_d value j was added for experience j
    (``LifelongVAEStrategy``); baselines built with the final J values have no
    such correspondence.

    Raises:
        ValueError: at ``before_eval`` when the model is not a ``LifelongVAE``.
    """

    def __init__(self, reference: nn.Module, num_classes: int, n_per_component: int = 500):
        self.reference = reference
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.n_per_component = check_positive_int(n_per_component, "n_per_component")
        self.per_component: List[float] = []
        super().__init__(ComponentPurity(), reset_at="stream", emit_at="stream", mode="eval")

    def before_eval(self, strategy):
        require_lifelong_vae(strategy.model, str(self))  # fail before a long evaluation
        self.reference.to(strategy.device)
        return super().before_eval(strategy)

    def update(self, strategy) -> None:
        pass  # everything happens once, after the stream

    def after_eval(self, strategy):
        self.per_component = component_purity(strategy.model, self.reference, self.num_classes, self.n_per_component)
        self._metric.update(self.per_component)
        return super().after_eval(strategy)

    def __str__(self):
        return "ComponentPurity_Stream"


def component_purity_metrics(reference: nn.Module, num_classes: int,
                             n_per_component: int = 500) -> List[ComponentPurityPluginMetric]:
    """Plugin metrics for the row purity of the sample grid (see :class:`ComponentPurityPluginMetric`)."""
    return [ComponentPurityPluginMetric(reference, num_classes, n_per_component)]
