"""Avalanche templates that train a :class:`~avalanche_lvae.models.LifelongVAE`.

:class:`LVAETemplateMixin` adapts any Avalanche ``SupervisedTemplate`` to the
model's dataclass output:

- ``forward`` keeps the full :class:`~avalanche_lvae.models.LVAEOutput` in
  ``strategy.lvae_output`` and returns the class logits as ``mb_output``, so
  every Avalanche metric and logger reads accuracy unchanged;
- ``criterion`` is the negative joint bound (:class:`~avalanche_lvae.losses.JointBoundLoss`),
  weighted per sample when the replay plugin asks for it;
- the training step reads nothing back from the device: the encoder's
  outputs and every loss term are recorded by a
  :class:`~avalanche_lvae.validation.FiniteMonitor`, read every
  ``non_finite_check_interval`` iterations (before that iteration's update)
  and at the end of every epoch; a non-finite value raises
  :class:`NonFiniteLossError` naming the term and the iteration it first
  appeared at;
- under ``torchrun`` (Avalanche's ``DistributedHelper``) the gradients are
  averaged across processes before every update and the replicas are kept
  identical (:mod:`avalanche_lvae.distributed`);
- ``optimizer_step`` anneals the Gumbel-softmax temperature;
- ``eval`` runs on a fork of torch's random generators, so evaluating does
  not change the training run;
- before each training experience the data are checked (pixel range, shape,
  labels) so that a wrong transform fails at once, not as a NaN mid-epoch.

:class:`LVAENaive` and :class:`LVAECumulative` are Avalanche's ``Naive`` and
``Cumulative`` with the mixin: the papers' vae-cl and upto-vae baselines.
"""

import math
from typing import Dict, Optional

import torch
from avalanche.training.supervised import Cumulative, Naive
from torch.utils.data import DataLoader

from . import avalanche_internals
from . import distributed
from .losses import JointBoundLoss
from .models import LifelongVAE, LVAEOutput
from .preloading import PreloadedTaskBalancedDataLoader, is_tensor_backed
from .validation import FiniteMonitor, check_images, check_labels, check_positive_int, deferred_checks

__all__ = ["LVAETemplateMixin", "LVAENaive", "LVAECumulative", "NonFiniteLossError", "validate_experience"]

_VALIDATION_BATCH = 4096


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss term or encoder output.

    Raised at the first check after it appeared (see ``non_finite_check_interval``
    of :class:`LVAETemplateMixin`); the message names the term(s), the
    iteration, and how many updates the student took since.
    """


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
        past_distributions: k, the number of distributions the teacher has
            learned (counted by ``TeacherSwapPlugin``).
        loss_terms: the named scalar terms of the current loss, for the guard.

    Args:
        non_finite_check_interval: the non-finite guard reads its device flags
            back every this many iterations, before that iteration's update,
            and after the last iteration of every epoch (default 50; 1 checks
            every iteration, one host sync each). Guarantee: a NaN or inf in
            an encoder output or a loss term raises :class:`NonFiniteLossError`
            at the next check, naming the term and the iteration it first
            appeared at; the student may have taken up to
            ``non_finite_check_interval - 1`` updates from non-finite
            gradients by then (none with 1), but the teacher (copied at an
            experience boundary, after the end-of-epoch check) and anything a
            plugin saves after an epoch or experience (checkpoints, metrics)
            never hold weights from a non-finite step.
    """

    def __init__(self, *, model: LifelongVAE, criterion=None, non_finite_check_interval: int = 50, **kwargs):
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
        self.past_distributions = 0
        self.loss_terms: Dict[str, torch.Tensor] = {}
        self.non_finite_check_interval = check_positive_int(non_finite_check_interval, "non_finite_check_interval")
        self._finite_monitor = FiniteMonitor()
        super().__init__(model=model, criterion=criterion or JointBoundLoss(), **kwargs)

    def _unpack_minibatch(self):
        super()._unpack_minibatch()
        # Per-minibatch state: plugins set it again in before_training_iteration.
        self.mb_sample_weights = None
        self.mb_reconstruction_targets = None
        self.mb_class_temperatures = None
        self.replay_batch = None
        self._finite_monitor.iteration = self.clock.train_exp_iterations

    def training_epoch(self, **kwargs):
        """Avalanche's epoch with host-sync-free checks, then the end-of-epoch non-finite check.

        Under ``torchrun`` the epoch draws its random numbers (replay, the
        reparameterisation noise, L_I's prior samples) from a stream that
        depends on the rank, so the processes do not replay the same images;
        everything outside the epoch (initialisation, z_d growth, evaluation)
        stays on the stream shared by all ranks.
        """
        with distributed.rank_random_stream(self.device), deferred_checks(self._finite_monitor):
            super().training_epoch(**kwargs)
        self._raise_if_non_finite(updated=True)
        distributed.sync_buffers(self.model)

    def eval(self, *args, **kwargs):
        """Avalanche's evaluation, on a fork of torch's random generators (CPU and the strategy's CUDA device).

        The evaluation draws random numbers (sampled reconstructions of the
        -ELBO, generated images); on the fork, it leaves
        the generators as it found them, so whether and how often a run is
        evaluated (``eval_every``, an ``eval`` after each experience or not)
        does not change its training. An evaluation started inside a training
        epoch checks its inputs immediately again and, under ``torchrun``,
        draws from a stream shared by all ranks.
        """
        device = torch.device(self.device)
        cuda = []
        if device.type == "cuda":
            cuda = [device.index if device.index is not None else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=cuda), deferred_checks(None), distributed.shared_random_stream():
            return super().eval(*args, **kwargs)

    def make_eval_dataloader(self, **kwargs):
        """Avalanche's evaluation loader, over the whole experience on every rank.

        Avalanche's loader would shard the test data by rank (``DistributedSampler``)
        and each rank's metrics would then describe a different shard; the
        replicas are identical, so every rank evaluates all of it and reports
        the same figures (only rank 0 should log or write them).
        """
        super().make_eval_dataloader(**kwargs)
        if hasattr(self.dataloader, "distributed_sampling"):
            self.dataloader.distributed_sampling = False

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
        Python fetching, held on the strategy's GPU when they fit; the checks
        then run on those tensors, not on a second pass over the data.
        """
        data = self.adapted_dataset
        _check_not_empty(data, self.experience)
        # BatchNorm cannot normalise a minibatch of one image in training mode
        # (torch raises "Expected more than 1 value per channel"): when the
        # data leave a last minibatch of exactly one image, drop it.
        local_size = math.ceil(len(data) / distributed.world_size())  # a rank's shard (DistributedSampler)
        if not drop_last and local_size > 1 and local_size % self.train_mb_size == 1:
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
            shuffle_seed=distributed.shared_seed() if distributed.world_size() > 1 else 0,
            device=self.device,
            **avalanche_internals.common_dataloader_parameters(self, batch_size=self.train_mb_size, **loader_args),
        )
        _check_batch(self.dataloader.tensors, self.model, self.experience)

    def forward(self):
        # At evaluation the reconstruction is sampled from q(z|x), so the logged
        # loss is a proper single-sample estimate of the negative joint bound;
        # the class logits always use the posterior mode.
        self.lvae_output = self.model(self.mb_x, sample=True)
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
        # Recorded on the device (no sync); read back every
        # non_finite_check_interval iterations, before this iteration's update.
        monitor = self._finite_monitor
        for name, value in self.loss_terms.items():
            monitor.record(name, value)
        monitor.record("total loss", self.loss)
        if (self.clock.train_exp_iterations + 1) % self.non_finite_check_interval == 0:
            self._raise_if_non_finite(updated=False)
        super().backward()

    def optimizer_step(self):
        distributed.average_gradients(self.model)
        super().optimizer_step()
        self.model.step_temperature()

    def _raise_if_non_finite(self, updated: bool) -> None:
        """Read the monitor (one sync) and raise :class:`NonFiniteLossError` if anything tripped.

        ``updated``: whether the current iteration's update has been applied.
        """
        # Under torchrun every rank checks at the same iteration and learns what
        # any rank found: a rank raising alone would leave the others waiting
        # in the next gradient all-reduce.
        tripped = distributed.merge_across_ranks(self._finite_monitor.tripped())
        if not tripped:
            return
        self._finite_monitor.reset()
        first = tripped[0][1]
        names = ", ".join(name for name, iteration in tripped if iteration == first)
        now = self._finite_monitor.iteration
        updates = now - first + (1 if updated else 0)
        if updates == 0:
            state = ("Training stopped before its update, so the student, the teacher and the last checkpoint "
                     "are unchanged.")
        else:
            state = (
                f"Detected at iteration {now} (checks every {self.non_finite_check_interval} iterations and at the "
                f"end of each epoch): the student took {updates} update(s) since and is unusable, but the teacher "
                "and the last checkpoint hold no weights from a non-finite step. "
                "non_finite_check_interval=1 stops before the first such update."
            )
        raise NonFiniteLossError(
            f"non-finite loss at experience {self.experience.current_experience}, iteration {first} of that "
            f"experience: {names} went non-finite. {state} Lower the learning rate or check the data."
        )


class LVAENaive(LVAETemplateMixin, Naive):
    """Avalanche's ``Naive`` training a ``LifelongVAE`` on the joint bound (the papers' vae-cl).

    Takes every ``Naive`` argument; ``criterion`` defaults to ``JointBoundLoss()``.
    Add Avalanche's ``EWCPlugin`` for the EWC baseline.
    """


class LVAECumulative(LVAETemplateMixin, Cumulative):
    """Avalanche's ``Cumulative`` training a ``LifelongVAE`` on the joint bound (the upto-vae upper bound)."""
