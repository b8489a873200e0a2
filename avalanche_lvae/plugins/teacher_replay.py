"""Generative replay from the teacher, equal shares per distribution (LGM Sec. 4, 4.3)."""

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin

from ..validation import check_bool, check_positive_float, check_positive_int

__all__ = ["TeacherReplayPlugin", "ReplayBatch"]


@dataclass
class ReplayBatch:
    """The teacher's replay appended to one minibatch.

    Attributes:
        num_real: rows ``[:num_real]`` of the minibatch are real data, the rest replay.
        components: ``[R]`` the z_d value each replayed row was generated with.
        teacher_discrete_logits: ``[R, J_teacher]`` q_teacher(z_d | x~), for the
            consistency term.
        teacher_continuous_loc, teacher_continuous_scale: ``[R, continuous_dim]``
            q_teacher(z_c | x~), for the optional Gaussian consistency term.
        z_continuous, z_discrete: ``[R, continuous_dim]``, ``[R, J_teacher]`` the
            prior latent the teacher decoded into x~; None for replay that was not
            decoded from one (a subclass's ``_draw`` that replays stored images).
    """

    num_real: int
    components: torch.Tensor
    teacher_discrete_logits: torch.Tensor
    teacher_continuous_loc: torch.Tensor
    teacher_continuous_scale: torch.Tensor
    z_continuous: Optional[torch.Tensor]
    z_discrete: Optional[torch.Tensor]


class TeacherReplayPlugin(SupervisedPlugin, supports_distributed=True):
    """Append teacher-generated samples of every past distribution to each minibatch.

    Callbacks:
        ``before_training_iteration``: when ``strategy.teacher`` exists, draw
        ``replay_size`` samples with z_d fixed in equal shares over the k
        values of the past distributions (``strategy.past_distributions``,
        counted by :class:`TeacherSwapPlugin`) and z_c ~ N(0, I), decode the Bernoulli means
        x~ and label them with the teacher's classifier (soft labels by
        default; the real labels become one-hot so that one target tensor
        holds both). Everything runs in one ``no_grad`` teacher pass, which
        also records q_teacher(z|x~) for the consistency terms.
        Every distribution must count the same (LGM Sec. 4: the student's
        instances come from the current data with probability pi = 1/(k+1),
        omega ~ Ber(pi), and from the teacher otherwise); ``mixing`` says how:

        - ``"batch_composition"`` (default; LGM Sec. 4's sampling at a fixed
          batch size, as in the authors' code, docs/method.md): the minibatch
          keeps its B rows, floor(B k/(k+1)) of them (at most B - 1) replaced
          by replay, plain mean loss. An iteration costs B rows whatever k,
          close to a plain VAE's (1.6x per epoch at experience 5 in
          ``benchmarks/speed.py``, the paper reports 1.31x), but an epoch uses
          only about B/(k+1) real images per minibatch, i.e. 1/(k+1) of the
          experience's data.
        - ``"loss_weights"``: append ``replay_size`` replayed rows and set
          ``strategy.mb_sample_weights`` to pi over the real rows and 1 - pi
          over the replayed ones: the same objective in expectation, but every
          real image is used every epoch and an iteration costs
          ``train_mb_size + replay_size`` rows (about 2x a plain VAE).

        With a ``temperature`` other than 1 it also sets
        ``strategy.mb_reconstruction_targets``: the real images, then the
        tempered replay.

        ``before_training``: ``"loss_weights"`` and a temperature other than 1
        hand the criterion per-minibatch inputs that only the LVAE templates
        pass on (``LifelongVAEStrategy``, ``LVAENaive``, ``LVAECumulative``);
        under another template they would be ignored without a word, so this
        raises a ``ValueError`` instead.

    Distributed (``supports_distributed``): each rank composes its own shard
    of the minibatch, drawing its replay from the rank-dependent random stream
    of the training epoch, so the ranks replay different images and every
    rank's share of real rows is 1/(k+1) as in one process
    (:mod:`avalanche_lvae.distributed`).

    Args:
        replay_size: replayed rows per minibatch with ``"loss_weights"``; None
            uses ``train_mb_size``. ``"batch_composition"`` sets it from k.
        mixing: ``"batch_composition"`` or ``"loss_weights"`` (see above).
        soft_labels: label replay with the teacher's class probabilities
            (default) or with their argmax.
        label_source: what the teacher's classifier reads for the labels.
            ``"posterior"`` (default): x~ itself, i.e. the teacher classifies
            x~ exactly as it classifies a real image at test time (its
            features, or the mode of q_teacher(z|x~)), as replay-through-feedback
            labels its replay. ``"prior"`` (CCL-GM; needs a model with
            ``classifier_input="latent"``): the generating z = [z_c, z_d].
            The decoder renders a prior z only approximately, so the two can
            disagree; with ``"posterior"`` the student distils the teacher's
            test-time function x -> y on x~ (measured on permuted MNIST, docs/results.md).
        distillation_temperature: None (default here) labels replay with the
            teacher's probabilities, scored by cross-entropy (CCL-GM). A
            temperature T labels it with softmax(teacher_logits / T) and has the
            criterion score those rows by T^2 KL against the student's
            softmax(logits / T) (Hinton et al. 2015; replay-through-feedback
            uses T = 2), through ``strategy.mb_class_temperatures``, which only
            the LVAE templates pass on. ``LifelongVAEStrategy`` uses 2.
        temperature: the student's reconstruction term scores each replayed row
            against the teacher's Bernoulli decoder tempered to
            p(x|z)^(1/temperature), renormalised per pixel, whose mean is
            ``sigmoid(logits / temperature)``; the encoder (hence the
            classifier and the consistency terms) still reads the plain mean
            x~. 1 (default) is the papers' objective. Below 1 the target is
            sharper than x~: each teacher-to-student generation re-learns x~
            through the student's own posterior and blurs it a little, and
            thin, low-ink structure (a sandal's straps) is the first to fade;
            the sharper target asks the student's decoder for the contrast that
            generation would lose. Beyond the papers; measured on split
            FashionMNIST (docs/results.md).
    """

    LABEL_SOURCES = ("prior", "posterior")
    MIXINGS = ("batch_composition", "loss_weights")

    def __init__(
        self,
        replay_size: Optional[int] = None,
        soft_labels: bool = True,
        label_source: str = "posterior",
        mixing: str = "batch_composition",
        temperature: float = 1.0,
        distillation_temperature: Optional[float] = None,
    ):
        super().__init__()
        if distillation_temperature is not None:
            distillation_temperature = check_positive_float(distillation_temperature, "distillation_temperature")
            if not soft_labels:
                raise ValueError("distillation_temperature distils the teacher's probabilities; it needs "
                                 "soft_labels=True (or pass distillation_temperature=None for argmax labels).")
        self.distillation_temperature = distillation_temperature
        self.temperature = check_positive_float(temperature, "temperature")
        self.replay_size = None if replay_size is None else check_positive_int(replay_size, "replay_size")
        if mixing not in self.MIXINGS:
            raise ValueError(f"mixing must be one of {self.MIXINGS}, got {mixing!r}.")
        if mixing == "batch_composition" and replay_size is not None:
            raise ValueError(
                "replay_size only applies to mixing='loss_weights'; with 'batch_composition' (the default) "
                "the number of replayed rows is floor(B k/(k+1)) of the minibatch. Pass replay_size=None, "
                "or mixing='loss_weights' to append replay_size rows."
            )
        self.mixing = mixing
        self.soft_labels = check_bool(soft_labels, "soft_labels")
        if label_source not in self.LABEL_SOURCES:
            raise ValueError(f"label_source must be one of {self.LABEL_SOURCES}, got {label_source!r}.")
        self.label_source = label_source

    def before_training_iteration(self, strategy, **kwargs):
        teacher = getattr(strategy, "teacher", None)
        if teacher is None:
            return
        past = strategy.past_distributions  # k, counted by TeacherSwapPlugin
        if self.mixing == "batch_composition":
            self._compose(strategy, teacher, past)
        else:
            self._append_weighted(strategy, teacher, past)

    def before_training(self, strategy, **kwargs):
        if self.label_source == "prior" and getattr(strategy.model, "classifier_input", "latent") != "latent":
            raise ValueError(
                'label_source="prior" labels replay by classifying the generating z, but this LifelongVAE '
                f"classifies the encoder's features (classifier_input={strategy.model.classifier_input!r}); "
                'use label_source="posterior" or LifelongVAE(classifier_input="latent").'
            )
        needs = [name for name, used in (("mb_sample_weights", self.mixing == "loss_weights"),
                                         ("mb_reconstruction_targets", self.temperature != 1.0),
                                         ("mb_class_temperatures", self.distillation_temperature is not None))
                 if used]
        missing = [name for name in needs if not hasattr(strategy, name)]
        if missing:
            raise ValueError(
                f"TeacherReplayPlugin(mixing={self.mixing!r}, temperature={self.temperature}) sets "
                f"{', '.join(missing)}, which {type(strategy).__name__}'s criterion would ignore; train with "
                "LifelongVAEStrategy or LVAENaive, or use mixing='batch_composition' and temperature=1."
            )

    def _compose(self, strategy, teacher, past: int) -> None:
        # The authors' batch: B rows, floor(B k/(k+1)) of them replay, at least one real.
        batch_size = strategy.mbatch[0].shape[0]
        replay_size = min(batch_size * past // (past + 1), batch_size - 1)
        num_real = batch_size - replay_size
        strategy.mbatch = [part[:num_real] for part in strategy.mbatch]
        if replay_size > 0:
            self._append(strategy, teacher, replay_size, past)

    def _append_weighted(self, strategy, teacher, past: int) -> None:
        num_real = strategy.mbatch[0].shape[0]
        replay_size = self.replay_size or strategy.train_mb_size
        x = self._append(strategy, teacher, replay_size, past)
        current_share = 1.0 / (past + 1)
        strategy.mb_sample_weights = torch.cat(
            [x.new_full((num_real,), current_share / num_real),
             x.new_full((replay_size,), (1 - current_share) / replay_size)]
        )

    def _draw(self, teacher, replay_size: int, past: int):
        """``replay_size`` replayed images in equal contiguous shares over the ``past`` distributions:
        ``(x~, reconstruction_target, components, z_continuous, z_discrete)``, x~ the teacher's Bernoulli means
        of prior latents and the target the tempered mean the student's decoder is scored against. The one place
        replay images come from: a subclass overrides it to replay something else under the same labels,
        shares and loss weights."""
        # z_d value j stands for distribution j: replay only the k values of the past
        # distributions, the ones pi counts (a model built with more values, grown
        # or not, has values no distribution has been assigned to yet).
        z_continuous, z_discrete, components = teacher.sample_latent(
            replay_size, num_components=min(past, teacher.discrete_dim))
        replay_logits = teacher.decode(z_continuous, z_discrete)
        replay_x = torch.sigmoid(replay_logits)
        # The encoder reads x~ (the Bernoulli mean); the decoder is scored against the tempered x~.
        target = replay_x if self.temperature == 1.0 else torch.sigmoid(replay_logits / self.temperature)
        return replay_x, target, components, z_continuous, z_discrete

    def _append(self, strategy, teacher, replay_size: int, past: int) -> torch.Tensor:
        """Append ``replay_size`` teacher samples (images, labels, task labels) to the minibatch; return the real
        images."""
        x, y = strategy.mbatch[0], strategy.mbatch[1]
        num_real = x.shape[0]
        with torch.no_grad():
            replay_x, reconstruction_target, components, z_continuous, z_discrete = self._draw(
                teacher, replay_size, past)
            teacher_loc, teacher_scale, teacher_discrete_logits, posterior_class_logits = (
                teacher.encode_and_classify(replay_x))
            if self.label_source == "posterior":
                replay_class_logits = posterior_class_logits
            else:
                replay_class_logits = teacher.classify(z_continuous, z_discrete)
        if self.soft_labels:
            real_targets = y if torch.is_floating_point(y) else F.one_hot(y, teacher.num_classes).to(x.dtype)
            t = self.distillation_temperature or 1.0
            targets = torch.cat([real_targets, (replay_class_logits / t).softmax(-1)])
            if self.distillation_temperature is not None:
                # Hinton et al.'s distillation: the criterion scores the replayed
                # rows at temperature T (T^2 KL), the real rows at 1.
                strategy.mb_class_temperatures = torch.cat(
                    [x.new_ones(num_real), x.new_full((replay_size,), self.distillation_temperature)])
        else:
            targets = torch.cat([y, replay_class_logits.argmax(-1)])
        strategy.mbatch[0] = torch.cat([x, replay_x])
        strategy.mbatch[1] = targets
        strategy.mbatch[-1] = torch.cat([strategy.mbatch[-1], strategy.mbatch[-1].new_zeros(replay_size)])
        if self.temperature != 1.0:
            strategy.mb_reconstruction_targets = torch.cat([x, reconstruction_target])
        strategy.replay_batch = ReplayBatch(
            num_real, components, teacher_discrete_logits, teacher_loc, teacher_scale, z_continuous, z_discrete
        )
        return x
