"""Avalanche templates that train a :class:`~avalanche_lvae.models.LifelongVAE`.

:class:`LVAETemplateMixin` adapts any Avalanche ``SupervisedTemplate`` to the
model's dataclass output:

- ``forward`` keeps the full :class:`~avalanche_lvae.models.LVAEOutput` in
  ``strategy.lvae_output`` and returns the class logits as ``mb_output``, so
  every Avalanche metric and logger reads accuracy unchanged;
- ``criterion`` is the negative joint bound (:class:`~avalanche_lvae.losses.JointBoundLoss`),
  weighted per sample when the replay plugin asks for it;
- ``backward`` refuses a non-finite loss and names the term that caused it
  before any weight is touched;
- ``optimizer_step`` anneals the Gumbel-softmax temperature;
- before each training experience the data are checked (pixel range, shape,
  labels) so that a wrong transform fails at once, not as a NaN mid-epoch.

:class:`LVAENaive` and :class:`LVAECumulative` are Avalanche's ``Naive`` and
``Cumulative`` with the mixin: the papers' vae-cl and upto-vae baselines.
"""

from typing import Dict, Optional

import torch
from avalanche.training.supervised import Cumulative, Naive
from torch.utils.data import DataLoader

from .losses import JointBoundLoss
from .models import LifelongVAE, LVAEOutput
from .preloading import PreloadedTaskBalancedDataLoader, is_tensor_backed
from .validation import check_images, check_labels

__all__ = ["LVAETemplateMixin", "LVAENaive", "LVAECumulative", "NonFiniteLossError", "validate_experience"]

_VALIDATION_BATCH = 4096


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; raised before the weights are updated."""


def validate_experience(experience, model: LifelongVAE) -> None:
    """Check every sample of an experience against the model, raising ``ValueError``.

    Catches the usual stream mistakes -- Avalanche's normalising transforms,
    raw [0, 255] bytes, wrong image size, labels beyond ``num_classes``, an
    empty experience -- before the first update of the experience.
    """
    dataset = experience.dataset
    _check_not_empty(dataset, experience)
    for batch in DataLoader(dataset.eval(), batch_size=_VALIDATION_BATCH, shuffle=False):
        _check_batch(batch, model, experience)


def _where(experience) -> str:
    return f"experience {getattr(experience, 'current_experience', '?')}"


def _check_not_empty(dataset, experience) -> None:
    if len(dataset) == 0:
        raise ValueError(
            f"{_where(experience)} has no samples; remove it from the stream or check the benchmark's split."
        )


def _check_batch(batch, model: LifelongVAE, experience) -> None:
    check_images(batch[0], model.input_shape, _where(experience))
    check_labels(batch[1], model.num_classes, f"{_where(experience)} labels")


class LVAETemplateMixin:
    """Mixin for an Avalanche ``SupervisedTemplate`` whose model is a ``LifelongVAE``.

    Put it first in the bases (``class S(LVAETemplateMixin, Naive)``). The
    criterion defaults to :class:`~avalanche_lvae.losses.JointBoundLoss`.

    Attributes set during training, read by the plugins:
        lvae_output: the full output of the last forward pass.
        mb_sample_weights: per-row loss weights of the current minibatch, or None.
        mb_reconstruction_targets: the images the reconstruction term scores
            for the current minibatch, or None (the inputs themselves).
        mb_class_temperatures: per-row distillation temperatures of the
            classification term, or None (all 1).
        replay_batch: the teacher's replay appended to this minibatch, or None.
        teacher: the frozen teacher (set by ``TeacherSwapPlugin``), or None.
        loss_terms: the named scalar terms of the current loss, for the guard.
    """

    def __init__(self, *, model: LifelongVAE, criterion=None, **kwargs):
        if not isinstance(model, LifelongVAE):
            raise ValueError(
                f"{type(self).__name__} trains an avalanche_lvae.LifelongVAE, got {type(model).__name__}; "
                "for other models use Avalanche's own strategies."
            )
        self.lvae_output: Optional[LVAEOutput] = None
        self.mb_sample_weights: Optional[torch.Tensor] = None
        self.mb_reconstruction_targets: Optional[torch.Tensor] = None
        self.mb_class_temperatures: Optional[torch.Tensor] = None
        self.replay_batch = None
        self.teacher: Optional[LifelongVAE] = None
        self.loss_terms: Dict[str, torch.Tensor] = {}
        super().__init__(model=model, criterion=criterion or JointBoundLoss(), **kwargs)

    def _unpack_minibatch(self):
        super()._unpack_minibatch()
        # Per-minibatch state: plugins set it again in before_training_iteration.
        self.mb_sample_weights = None
        self.mb_reconstruction_targets = None
        self.mb_class_temperatures = None
        self.replay_batch = None

    def make_train_dataloader(
        self, num_workers=0, shuffle=True, pin_memory=None, persistent_workers=False, drop_last=False, **kwargs
    ):
        """Avalanche's training loader, pre-loaded when the data are plain tensors; validates the data.

        Every sample is checked (pixel range, shape, labels) before the first
        update of the experience, so a wrong transform fails at once, not as a
        NaN mid-epoch. Tensor-backed data without transforms (every stream of
        :mod:`avalanche_lvae.streams`) are read once into tensors and served by
        :class:`~avalanche_lvae.preloading.PreloadedTaskBalancedDataLoader`:
        the same minibatches as Avalanche's loader, without its per-sample
        Python fetching; the checks then run on those tensors, not on a
        second pass over the data.
        """
        data = self.adapted_dataset
        _check_not_empty(data, self.experience)
        # BatchNorm cannot normalise a minibatch of one image in training mode
        # (torch raises "Expected more than 1 value per channel"): when the
        # data leave a last minibatch of exactly one image, drop it.
        if not drop_last and len(data) > 1 and len(data) % self.train_mb_size == 1:
            drop_last = True
        loader_args = dict(num_workers=num_workers, shuffle=shuffle, pin_memory=pin_memory,
                           persistent_workers=persistent_workers, drop_last=drop_last)
        if "ffcv_args" in kwargs or not hasattr(self.experience, "task_labels") or not is_tensor_backed(data):
            validate_experience(self.experience, self.model)
            super().make_train_dataloader(**loader_args, **kwargs)
            return
        self.dataloader = PreloadedTaskBalancedDataLoader(
            data,
            oversample_small_groups=True,
            **self._obtain_common_dataloader_parameters(batch_size=self.train_mb_size, **loader_args),
        )
        _check_batch(self.dataloader.tensors, self.model, self.experience)

    def forward(self):
        # At evaluation the reconstruction is sampled from q(z|x), so the logged
        # loss is a proper single-sample estimate of the negative joint bound;
        # the class logits always use the posterior mode.
        try:
            self.lvae_output = self.model(self.mb_x, sample=True)
        except FloatingPointError as error:
            if not self.is_training or isinstance(error, NonFiniteLossError):
                raise
            raise NonFiniteLossError(self._non_finite_message(str(error))) from error
        return self.lvae_output.class_logits

    def criterion(self):
        # Only what a plugin set is passed, so a criterion without these keywords still works.
        options = dict(sample_weights=self.mb_sample_weights, reconstruction_targets=self.mb_reconstruction_targets,
                       class_temperatures=self.mb_class_temperatures)
        loss = self._criterion(self.lvae_output, self.mb_y, **{k: v for k, v in options.items() if v is not None})
        terms = getattr(self._criterion, "last_terms", None)
        self.loss_terms = {} if terms is None else {
            "reconstruction": terms.reconstruction,
            "continuous_kl": terms.continuous_kl,
            "discrete_kl": terms.discrete_kl,
            "classification": terms.classification,
        }
        return loss

    def backward(self):
        if not torch.isfinite(self.loss):
            raise NonFiniteLossError(self._non_finite_message())
        super().backward()

    def optimizer_step(self):
        super().optimizer_step()
        self.model.step_temperature()

    def _non_finite_message(self, cause: Optional[str] = None) -> str:
        if cause is None:
            bad = [name for name, value in self.loss_terms.items() if not torch.isfinite(value).all()]
            cause = f"loss term(s) {', '.join(bad)}" if bad else f"the total loss ({self.loss.item()})"
            cause += " went non-finite"
        where = (
            f"experience {self.experience.current_experience}, "
            f"iteration {self.clock.train_exp_iterations} of that experience"
        )
        return (
            f"non-finite loss at {where}: {cause}. Training stopped before the update, "
            "so the teacher and the last checkpoint are unchanged. Lower the learning rate or check the data."
        )


class LVAENaive(LVAETemplateMixin, Naive):
    """Avalanche's ``Naive`` training a ``LifelongVAE`` on the joint bound (the papers' vae-cl).

    Takes every ``Naive`` argument; ``criterion`` defaults to ``JointBoundLoss()``.
    Add Avalanche's ``EWCPlugin`` for the EWC baseline.
    """


class LVAECumulative(LVAETemplateMixin, Cumulative):
    """Avalanche's ``Cumulative`` training a ``LifelongVAE`` on the joint bound (the upto-vae upper bound)."""
