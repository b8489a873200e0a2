"""Image grids of generated samples and of reconstructions, as Avalanche image metrics.

Both emit ``MetricValue``s holding an Avalanche ``TensorImage`` (a ``[3, H, W]``
float tensor in [0, 1] from ``torchvision.utils.make_grid``) with
``LoggingType.IMAGE``, which ``TensorboardLogger`` writes with ``add_image``
and the text loggers skip. With ``save_dir`` each grid is also saved as PNG.
"""

import os
from pathlib import Path
from typing import List, Optional, Union

import torch
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import LoggingType, MetricValue, TensorImage
from avalanche.evaluation.metric_utils import get_metric_name, stream_type
from torchvision.utils import make_grid, save_image

from ..validation import check_positive_int
from .utils import evaluation_mode, require_lifelong_vae, trained_experience_index

__all__ = ["GeneratedSamplesPluginMetric", "ReconstructionsPluginMetric", "generated_samples_metrics"]

#: Pixels between the images of a grid (``make_grid``'s default).
GRID_PADDING = 2


def _training_tag(strategy) -> str:
    """``after_exp<k>`` (k = last trained experience) or ``before_training``, for file names."""
    k = trained_experience_index(strategy)
    return f"after_exp{k:03d}" if k >= 0 else "before_training"


class _GridMetric(PluginMetric[Optional[torch.Tensor]]):
    """Keeps the last grid; packages it as an image ``MetricValue`` and optionally saves it."""

    def __init__(self, save_dir: Optional[Union[str, os.PathLike]] = None):
        super().__init__()
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.grid: Optional[torch.Tensor] = None

    def result(self) -> Optional[torch.Tensor]:
        """The last grid ``[3, H, W]`` in [0, 1], or None."""
        return self.grid

    def reset(self) -> None:
        """Forget the last grid."""
        self.grid = None

    def _emit(self, strategy, images: torch.Tensor, nrow: int, file_name: str, add_experience: bool):
        self.grid = make_grid(images.detach().cpu(), nrow=nrow, padding=GRID_PADDING)
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            save_image(self.grid, self.save_dir / file_name)
        name = get_metric_name(self, strategy, add_experience=add_experience, add_task=False)
        return [MetricValue(self, name, TensorImage(self.grid), strategy.clock.train_iterations,
                            logging_type=LoggingType.IMAGE)]


class GeneratedSamplesPluginMetric(_GridMetric):
    """A grid of samples with one row per discrete component: z_d fixed per row, z_c ~ N(0, I) varying.

    Emitted after each ``strategy.eval`` call as
    ``GeneratedSamples/eval_phase/<stream>``; with ``save_dir`` also saved as
    ``samples_<stream>_after_exp<k>.png``, k the index of the last training
    experience (``samples_<stream>_before_training.png`` before any training). The rows show what each z_d value has
    learned (LGM Fig. 4): for the lifelong model, row j is distribution j.

    Args:
        n_per_component: images per row (columns of the grid).
        save_dir: folder for the PNG files, created on demand; None saves nothing.

    Raises:
        ValueError: after eval, when the strategy's model is not a ``LifelongVAE``.
    """

    def __init__(self, n_per_component: int = 8, save_dir: Optional[Union[str, os.PathLike]] = None):
        super().__init__(save_dir)
        self.n_per_component = check_positive_int(n_per_component, "n_per_component")

    def before_eval(self, strategy):
        require_lifelong_vae(strategy.model, str(self))  # fail before a long evaluation

    def after_eval(self, strategy):
        model = require_lifelong_vae(strategy.model, str(self))
        with evaluation_mode(model):
            images = torch.cat([model.sample(self.n_per_component, component=j)[0]
                                for j in range(model.discrete_dim)])
        stream = stream_type(strategy.experience)
        file_name = f"samples_{stream}_{_training_tag(strategy)}.png"
        return self._emit(strategy, images, self.n_per_component, file_name, add_experience=False)

    def __str__(self):
        return "GeneratedSamples"


class ReconstructionsPluginMetric(_GridMetric):
    """Two rows per evaluated experience: ``n`` test images, then their reconstructions.

    The images are the first ``n`` of the experience's first eval minibatch;
    the reconstruction is the Bernoulli mean decoded from the posterior mode
    (mean of z_c, argmax of z_d), so the grid is deterministic. Emitted after
    each eval experience as ``Reconstructions/eval_phase/<stream>/Exp<e>``;
    with ``save_dir`` saved as ``reconstructions_<stream>_exp<e>_after_exp<k>.png``.

    Args:
        n: images per row.
        save_dir: folder for the PNG files; None saves nothing.
    """

    def __init__(self, n: int = 8, save_dir: Optional[Union[str, os.PathLike]] = None):
        super().__init__(save_dir)
        self.n = check_positive_int(n, "n")
        self._inputs: List[torch.Tensor] = []

    def before_eval(self, strategy):
        require_lifelong_vae(strategy.model, str(self))

    def before_eval_exp(self, strategy):
        self._inputs = []

    def after_eval_iteration(self, strategy):
        missing = self.n - sum(len(x) for x in self._inputs)
        if missing > 0:
            self._inputs.append(strategy.mb_x[:missing].detach())

    def after_eval_exp(self, strategy):
        if not self._inputs:
            return None
        model = require_lifelong_vae(strategy.model, str(self))
        inputs = torch.cat(self._inputs)
        with evaluation_mode(model):
            reconstructions = torch.sigmoid(model(inputs, sample=False).reconstruction_logits)
        exp = strategy.experience.current_experience
        file_name = f"reconstructions_{stream_type(strategy.experience)}_exp{exp:03d}_{_training_tag(strategy)}.png"
        return self._emit(strategy, torch.cat([inputs, reconstructions]), len(inputs), file_name,
                          add_experience=True)

    def __str__(self):
        return "Reconstructions"


def generated_samples_metrics(
    n_per_component: int = 8,
    save_dir: Optional[Union[str, os.PathLike]] = None,
    reconstructions: bool = True,
    n_reconstructions: int = 8,
) -> List[_GridMetric]:
    """Image metrics for a ``LifelongVAE``: the per-component sample grid and, optionally, reconstructions.

    Args:
        n_per_component: columns of the sample grid (one row per z_d value).
        save_dir: save every grid there as PNG (the file name holds the experience index).
        reconstructions: also add :class:`ReconstructionsPluginMetric`.
        n_reconstructions: images per reconstruction row.
    """
    metrics: List[_GridMetric] = [GeneratedSamplesPluginMetric(n_per_component, save_dir)]
    if reconstructions:
        metrics.append(ReconstructionsPluginMetric(n_reconstructions, save_dir))
    return metrics
