"""LifelongVAEStrategy: the lifelong generative model as an Avalanche strategy."""

from typing import List, Optional

from avalanche.core import SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate

from .plugins import (
    AggregatePosteriorPlugin,
    BoundaryDetectionPlugin,
    ComponentAnchorPlugin,
    ComponentPriorPlugin,
    DecoderDistillationPlugin,
    PosteriorConsistencyPlugin,
    TeacherReplayPlugin,
    TeacherSwapPlugin,
)
from .training import LVAETemplateMixin
from .validation import check_bool, check_non_negative_float

__all__ = ["LifelongVAEStrategy"]


class LifelongVAEStrategy(LVAETemplateMixin, SupervisedTemplate):
    """Student-teacher lifelong VAE with a classifier (LGM Eq. 10 + CCL-GM Eq. 5).

    The student minimises the negative joint bound on real + replayed data,
    plus ``consistency_weight`` * KL[q_student(z_d|x~) || q_teacher(z_d|x~)]
    plus ``info_weight`` * L_I. It is Avalanche's ``SupervisedTemplate`` with
    three plugins installed before the user's:

    - :class:`~avalanche_lvae.plugins.TeacherSwapPlugin` (teacher at each boundary, z_d growth), or
      :class:`~avalanche_lvae.plugins.BoundaryDetectionPlugin` with ``boundaries="detected"``,
    - :class:`~avalanche_lvae.plugins.TeacherReplayPlugin` (if ``replay``),
    - :class:`~avalanche_lvae.plugins.PosteriorConsistencyPlugin`,

    and, only when their weights are positive, three options that are not in
    the papers (``decoder_distillation_weight``, ``component_anchor_weight``,
    ``aggregate_posterior_weight``; measured in README).

    ``mb_output`` is the class logits, so Avalanche's accuracy, forgetting and
    loss metrics and every logger work unchanged.

    Args:
        model: a :class:`~avalanche_lvae.models.LifelongVAE` (``discrete_dim=1``
            for the lifelong model).
        optimizer: its optimizer; its state is reset at every teacher swap.
        criterion: defaults to :class:`~avalanche_lvae.losses.JointBoundLoss`.
        consistency_weight: weight of the consistency KL (default 1.0; 0 = off).
        info_weight: lambda of LGM Eq. 10 for L_I (default 0.01; 0 = off).
        replay: generate teacher replay for past distributions (default True).
            Without replay there are no x~ and the consistency term is inactive.
        replay_size: replayed rows per minibatch with
            ``replay_mixing="loss_weights"`` (default ``train_mb_size``).
        soft_replay_labels: teacher class probabilities as replay labels
            (default) rather than their argmax.
        replay_label_source: ``"prior"`` (default, CCL-GM: the teacher
            classifies the generating z) or ``"posterior"`` (the teacher
            classifies x~ at the mode of its posterior, as it does real data);
            see :class:`~avalanche_lvae.plugins.TeacherReplayPlugin`.
        replay_mixing: how every distribution gets the same share:
            ``"batch_composition"`` (default: LGM Sec. 4's sampling with
            pi = 1/(k+1) at a fixed batch size, as in the authors' code; the
            minibatch keeps ``train_mb_size`` rows, a fraction k/(k+1) of them
            replay, so an iteration costs about a plain VAE's, but an epoch
            uses only 1/(k+1) of the real data) or ``"loss_weights"``
            (``replay_size`` rows appended and the loss weighted pi on the
            real rows: every real image every epoch, about twice the cost).
        replay_temperature: the student reconstructs each replayed x~ towards
            the teacher's decoder mean at this temperature,
            sigmoid(logits / replay_temperature), while its encoder reads x~
            itself. 1 (default) is the papers' objective; below 1 the target
            is sharper, against the blur each teacher-to-student generation
            adds (not in the papers; see
            :class:`~avalanche_lvae.plugins.TeacherReplayPlugin`).
        grow_discrete: add one z_d value per experience (default True).
        info_samples: prior samples per iteration for L_I (default ``train_mb_size // 4``).
        reverse_kl: reverse (default) or forward consistency KL.
        continuous_consistency_weight: weight of the Gaussian consistency KL on
            z_c (LGM Eq. 11; default 0, as in Eq. 10).
        decoder_distillation_weight: weight of -log p_student(x~|z) at the
            prior z that generated each replayed x~
            (:class:`~avalanche_lvae.plugins.DecoderDistillationPlugin`; not in
            the papers, default 0 = off).
        component_anchor_weight: weight of -log q_student(z_d = newest | x) on
            the real data (:class:`~avalanche_lvae.plugins.ComponentAnchorPlugin`;
            not in the papers, default 0 = off).
        aggregate_posterior_weight: weight of an MMD between the real data's
            z_c samples and N(0, I)
            (:class:`~avalanche_lvae.plugins.AggregatePosteriorPlugin`; not in
            the papers, default 0 = off).
        component_prior: how a generated row of distribution j draws z_c:
            ``"standard"`` (default, the papers: N(0, I)) or ``"fitted"``
            (a Gaussian fitted to the encoder's z_c for j after each experience,
            :class:`~avalanche_lvae.plugins.ComponentPriorPlugin`; not in the
            papers). It changes generation and replay, not the training losses.
        boundaries: where a new distribution starts: ``"given"`` (default: at
            every training experience) or ``"detected"`` (task-free: a
            :class:`~avalanche_lvae.plugins.BoundaryDetectionPlugin` with its
            defaults replaces the swap plugin and experience boundaries are
            ignored); a ``BoundaryDetectionPlugin`` instance sets its thresholds.
        plugins: extra Avalanche plugins, run after the three above.
        **kwargs: every other ``SupervisedTemplate`` argument (``train_mb_size``,
            ``train_epochs``, ``eval_mb_size``, ``device``, ``evaluator``,
            ``eval_every``, ...).
    """

    def __init__(
        self,
        *,
        model,
        optimizer,
        criterion=None,
        consistency_weight: float = 1.0,
        info_weight: float = 0.01,
        replay: bool = True,
        replay_size: Optional[int] = None,
        soft_replay_labels: bool = True,
        replay_label_source: str = "prior",
        replay_mixing: str = "batch_composition",
        replay_temperature: float = 1.0,
        grow_discrete: bool = True,
        info_samples: Optional[int] = None,
        reverse_kl: bool = True,
        continuous_consistency_weight: float = 0.0,
        decoder_distillation_weight: float = 0.0,
        component_anchor_weight: float = 0.0,
        aggregate_posterior_weight: float = 0.0,
        component_prior: str = "standard",
        boundaries="given",
        plugins: Optional[List[SupervisedPlugin]] = None,
        **kwargs,
    ):
        if boundaries == "detected":
            boundaries = BoundaryDetectionPlugin(grow_discrete=grow_discrete)
        if boundaries == "given":
            boundaries = TeacherSwapPlugin(grow_discrete=grow_discrete)
        elif not isinstance(boundaries, BoundaryDetectionPlugin):
            raise ValueError(f'boundaries must be "given", "detected" or a BoundaryDetectionPlugin, got {boundaries!r}.')
        lifelong_plugins: List[SupervisedPlugin] = [boundaries]  # first: replay reads the teacher it sets
        if check_bool(replay, "replay"):
            lifelong_plugins.append(TeacherReplayPlugin(
                replay_size=replay_size, soft_labels=soft_replay_labels, label_source=replay_label_source,
                mixing=replay_mixing, temperature=replay_temperature,
            ))
        lifelong_plugins.append(
            PosteriorConsistencyPlugin(
                consistency_weight=consistency_weight,
                info_weight=info_weight,
                info_samples=info_samples,
                reverse_kl=reverse_kl,
                continuous_consistency_weight=continuous_consistency_weight,
            )
        )
        # Options beyond the papers, installed only when weighted (see their modules).
        for plugin_cls, weight, name in [
            (DecoderDistillationPlugin, decoder_distillation_weight, "decoder_distillation_weight"),
            (ComponentAnchorPlugin, component_anchor_weight, "component_anchor_weight"),
            (AggregatePosteriorPlugin, aggregate_posterior_weight, "aggregate_posterior_weight"),
        ]:
            if check_non_negative_float(weight, name) > 0:
                lifelong_plugins.append(plugin_cls(weight))
        if component_prior not in ("standard", "fitted"):
            raise ValueError(f'component_prior must be "standard" (N(0, I), the papers) or "fitted", '
                             f"got {component_prior!r}.")
        if component_prior == "fitted":
            lifelong_plugins.append(ComponentPriorPlugin())
        super().__init__(
            model=model,
            optimizer=optimizer,
            criterion=criterion,
            plugins=lifelong_plugins + list(plugins or []),
            **kwargs,
        )
