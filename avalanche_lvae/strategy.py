"""LifelongVAEStrategy: the lifelong generative model as an Avalanche strategy."""

from typing import List, Optional

from avalanche.core import SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate

from .plugins import (
    BoundaryDetectionPlugin,
    ComponentAnchorPlugin,
    ComponentPriorPlugin,
    InformationRestrictionPlugin,
    PosteriorConsistencyPlugin,
    TeacherReplayPlugin,
    TeacherSwapPlugin,
)
from .losses import JointBoundLoss
from .training import LVAETemplateMixin
from .validation import check_bool, check_non_negative_float, check_positive_int

__all__ = ["LifelongVAEStrategy"]


class LifelongVAEStrategy(LVAETemplateMixin, SupervisedTemplate):
    """Student-teacher lifelong VAE with a classifier (LGM Eq. 10 + CCL-GM Eq. 5).

    The student minimises the negative joint bound on real + replayed data,
    plus ``consistency_weight`` * KL[q_student(z_d|x~) || q_teacher(z_d|x~)]
    plus ``info_weight`` * L_I. It is Avalanche's ``SupervisedTemplate`` with
    these plugins installed before the user's:

    - :class:`~avalanche_lvae.plugins.TeacherSwapPlugin` (teacher at each new experience, z_d growth), or
      :class:`~avalanche_lvae.plugins.BoundaryDetectionPlugin` with ``boundaries="detected"``,
    - :class:`~avalanche_lvae.plugins.TeacherReplayPlugin` (if ``replay``),
    - :class:`~avalanche_lvae.plugins.PosteriorConsistencyPlugin` (the consistency KLs),
    - :class:`~avalanche_lvae.plugins.ComponentAnchorPlugin` (the current distribution on its z_d value),
    - :class:`~avalanche_lvae.plugins.InformationRestrictionPlugin` (L_I),
    - :class:`~avalanche_lvae.plugins.ComponentPriorPlugin` (if ``component_prior="fitted"``).

    ``mb_output`` is the class logits, so Avalanche's accuracy, forgetting and
    loss metrics and every logger work unchanged.

    The defaults are the configuration measured best for continual
    classification on split and permuted MNIST while keeping generation
    (docs/results.md): with ``LifelongVAE()``'s classifier on the encoder's
    features, replay labelled by the teacher's test-time classifier and
    distilled at temperature 2, classification weight 10, the consistency
    KL on z_c as well as on z_d, LGM Sec. 4's batch composition and no L_I. The papers' equations are
    ``LifelongVAE(**PAPER_MODEL)`` with ``LifelongVAEStrategy(..., **PAPER_STRATEGY)``
    (:mod:`avalanche_lvae.presets`).

    Args:
        model: a :class:`~avalanche_lvae.models.LifelongVAE` (``discrete_dim=1``
            for the lifelong model).
        optimizer: its optimizer; its state is reset at every teacher swap.
        criterion: defaults to :class:`~avalanche_lvae.losses.JointBoundLoss`
            with ``classification_weight``.
        classification_weight: weight of the classification term of the
            default criterion (default ``DEFAULT_CLASSIFICATION_WEIGHT``;
            the papers' joint bound, CCL-GM Eq. 4, is 1). Give either this or
            ``criterion``, not both.
        consistency_weight: weight of the consistency KL (default 1.0; 0 = off);
            each replayed row carries the weight it has in the ELBO
            (:class:`~avalanche_lvae.plugins.PosteriorConsistencyPlugin`).
        info_weight: lambda of LGM Eq. 10 for L_I (default 0 = off,
            :class:`~avalanche_lvae.plugins.InformationRestrictionPlugin`; the
            papers' 0.01 is in :data:`~avalanche_lvae.presets.PAPER_STRATEGY`).
        replay: generate teacher replay for past distributions (default True).
            Without replay there are no x~ and the consistency term is inactive.
        replay_size: replayed rows per minibatch with
            ``replay_mixing="loss_weights"`` (default ``train_mb_size``).
        soft_replay_labels: teacher class probabilities as replay labels
            (default) rather than their argmax.
        replay_label_source: ``"posterior"`` (default: the teacher classifies
            x~ as it classifies real data) or ``"prior"`` (CCL-GM: the teacher
            classifies the generating z; needs ``LifelongVAE(classifier_input="latent")``);
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
        distillation_temperature: replayed rows are labelled with the
            teacher's class logits softened at this temperature T and scored by
            T^2 KL (Hinton et al. 2015; replay-through-feedback, van de Ven &
            Tolias 2018, uses T = 2). Default 2; None gives the papers'
            cross-entropy against the teacher's probabilities.
        grow_discrete: add one z_d value per experience (default True).
        info_samples: prior samples per iteration for L_I (default ``train_mb_size // 4``).
        reverse_kl: reverse (default) or forward consistency KL.
        continuous_consistency_weight: weight of the Gaussian consistency KL on
            z_c (LGM Eq. 11; default 1; Eq. 10 has none, 0 switches it off).
            It keeps the student's continuous latent where the teacher's
            was, so the samples of past distributions stay sharp
            (docs/method.md, D18).
        component_prior: how a generated row of distribution j draws z_c:
            ``"standard"`` (default, the papers: N(0, I)) or ``"fitted"``
            (a Gaussian fitted to the encoder's z_c for j after each experience,
            :class:`~avalanche_lvae.plugins.ComponentPriorPlugin`; not in the
            papers). It changes generation and replay, not the training losses.
        component_anchor_weight: weight of the cross-entropy that sends the
            current distribution's real images to its own z_d value
            (:class:`~avalanche_lvae.plugins.ComponentAnchorPlugin`; not in the
            papers, whose objective leaves that value free; 0 switches it off).
        boundaries: where a new distribution starts: ``"given"`` (default: at
            every training experience) or ``"detected"`` (task-free: a
            :class:`~avalanche_lvae.plugins.BoundaryDetectionPlugin` with its
            defaults replaces the swap plugin and experience boundaries are
            ignored); a ``BoundaryDetectionPlugin`` instance sets its thresholds.
        plugins: extra Avalanche plugins, run after the ones above.
        train_mb_size: real images per minibatch (default 128, as
            replay-through-feedback; Avalanche's own default of 1 cannot train
            the BatchNorm layers).
        train_epochs: epochs per experience (default ``DEFAULT_TRAIN_EPOCHS``).
        **kwargs: every other ``SupervisedTemplate`` argument (``train_mb_size``,
            ``train_epochs``, ``eval_mb_size``, ``device``, ``evaluator``,
            ``eval_every``, ...).
    """

    DEFAULT_CLASSIFICATION_WEIGHT = 10.0
    DEFAULT_TRAIN_EPOCHS = 5
    COMPONENT_PRIORS = ("standard", "fitted")

    def __init__(
        self,
        *,
        model,
        optimizer,
        criterion=None,
        classification_weight: Optional[float] = None,
        consistency_weight: float = 1.0,
        info_weight: float = 0.0,
        replay: bool = True,
        replay_size: Optional[int] = None,
        soft_replay_labels: bool = True,
        replay_label_source: str = "posterior",
        replay_mixing: str = "batch_composition",
        replay_temperature: float = 1.0,
        distillation_temperature: Optional[float] = 2.0,
        grow_discrete: bool = True,
        info_samples: Optional[int] = None,
        reverse_kl: bool = True,
        continuous_consistency_weight: float = 1.0,
        component_prior: str = "standard",
        component_anchor_weight: float = 0.0,
        boundaries="given",
        plugins: Optional[List[SupervisedPlugin]] = None,
        train_mb_size: int = 128,
        train_epochs: int = DEFAULT_TRAIN_EPOCHS,
        **kwargs,
    ):
        if boundaries == "detected":
            boundaries = BoundaryDetectionPlugin(grow_discrete=grow_discrete)
        if boundaries == "given":
            boundaries = TeacherSwapPlugin(grow_discrete=grow_discrete)
        elif not isinstance(boundaries, BoundaryDetectionPlugin):
            raise ValueError(
                f'boundaries must be "given", "detected" or a BoundaryDetectionPlugin, got {boundaries!r}.')
        lifelong_plugins: List[SupervisedPlugin] = [boundaries]  # first: replay reads the teacher it sets
        if check_bool(replay, "replay"):
            lifelong_plugins.append(TeacherReplayPlugin(
                replay_size=replay_size, soft_labels=soft_replay_labels, label_source=replay_label_source,
                mixing=replay_mixing, temperature=replay_temperature,
                distillation_temperature=distillation_temperature,
            ))
        lifelong_plugins.append(PosteriorConsistencyPlugin(
            consistency_weight=consistency_weight, reverse_kl=reverse_kl,
            continuous_consistency_weight=continuous_consistency_weight,
        ))
        lifelong_plugins.append(ComponentAnchorPlugin(
            weight=check_non_negative_float(component_anchor_weight, "component_anchor_weight")))
        lifelong_plugins.append(InformationRestrictionPlugin(
            weight=check_non_negative_float(info_weight, "info_weight"),
            samples=None if info_samples is None else check_positive_int(info_samples, "info_samples"),
        ))
        if component_prior not in self.COMPONENT_PRIORS:
            raise ValueError(f'component_prior must be "standard" (N(0, I), the papers) or "fitted", '
                             f"got {component_prior!r}.")
        if component_prior == "fitted":
            lifelong_plugins.append(ComponentPriorPlugin())
        if criterion is None:
            criterion = JointBoundLoss(
                self.DEFAULT_CLASSIFICATION_WEIGHT if classification_weight is None else classification_weight)
        elif classification_weight is not None:
            raise ValueError("pass either criterion or classification_weight, not both: classification_weight "
                             "builds the default criterion JointBoundLoss(classification_weight).")
        super().__init__(
            model=model,
            optimizer=optimizer,
            criterion=criterion,
            plugins=lifelong_plugins + list(plugins or []),
            train_mb_size=train_mb_size,
            train_epochs=train_epochs,
            **kwargs,
        )
