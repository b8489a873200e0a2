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
            prior latent the teacher decoded into x~ (for decoder distillation).
    """

    num_real: int
    components: torch.Tensor
    teacher_discrete_logits: torch.Tensor
    teacher_continuous_loc: torch.Tensor
    teacher_continuous_scale: torch.Tensor
    z_continuous: torch.Tensor
    z_discrete: torch.Tensor


class TeacherReplayPlugin(SupervisedPlugin):
    """Append teacher-generated samples of every past distribution to each minibatch.

    Callbacks:
        ``before_training_iteration``: when ``strategy.teacher`` exists, draw
        ``replay_size`` samples with z_d fixed in equal shares over the
        teacher's components and z_c ~ N(0, I), decode the Bernoulli means
        x~ and label them with the teacher's classifier (soft labels by
        default; the real labels become one-hot so that one target tensor
        holds both). Everything runs in one ``no_grad`` teacher pass, which
        also records q_teacher(z|x~) for the consistency terms.
        Every distribution must count the same (LGM Sec. 4: the student's
        instances come from the current data with probability pi = 1/(k+1),
        omega ~ Ber(pi), and from the teacher otherwise); ``mixing`` says how:

        - ``"batch_composition"`` (default; LGM Sec. 4's sampling at a fixed
          batch size, as in the authors' code, METHOD.md §8): the minibatch
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

    Args:
        replay_size: replayed rows per minibatch with ``"loss_weights"``; None
            uses ``train_mb_size``. ``"batch_composition"`` sets it from k.
        mixing: ``"batch_composition"`` or ``"loss_weights"`` (see above).
        soft_labels: label replay with the teacher's class probabilities
            (default) or with their argmax.
        label_source: where the teacher's classifier reads z for the labels.
            ``"prior"`` (default, CCL-GM): the generating z = [z_c, z_d].
            ``"posterior"``: the mode of q_teacher(z|x~), i.e. the teacher
            classifies x~ exactly as it classifies a real image at test time.
            The decoder renders a prior z only approximately, so the two can
            disagree; with ``"posterior"`` the student distils the teacher's
            test-time function x -> y on x~ (measured on permuted MNIST in README).
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
            FashionMNIST (README, Results). :class:`DecoderDistillationPlugin`
            still scores x~ itself.
    """

    LABEL_SOURCES = ("prior", "posterior")
    MIXINGS = ("batch_composition", "loss_weights")

    def __init__(
        self,
        replay_size: Optional[int] = None,
        soft_labels: bool = True,
        label_source: str = "prior",
        mixing: str = "batch_composition",
        temperature: float = 1.0,
    ):
        super().__init__()
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
        # k distributions seen before this one: one per earlier experience, or
        # per detected boundary when BoundaryDetectionPlugin counts them.
        past = getattr(strategy, "past_distributions", None)
        past = strategy.clock.train_exp_counter if past is None else past
        if self.mixing == "batch_composition":
            self._compose(strategy, teacher, past)
        else:
            self._append_weighted(strategy, teacher, past)

    def before_training(self, strategy, **kwargs):
        needs = [name for name, used in (("mb_sample_weights", self.mixing == "loss_weights"),
                                         ("mb_reconstruction_targets", self.temperature != 1.0)) if used]
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
            self._append(strategy, teacher, replay_size)

    def _append_weighted(self, strategy, teacher, past: int) -> None:
        num_real = strategy.mbatch[0].shape[0]
        replay_size = self.replay_size or strategy.train_mb_size
        x = self._append(strategy, teacher, replay_size)
        current_share = 1.0 / (past + 1)
        strategy.mb_sample_weights = torch.cat(
            [x.new_full((num_real,), current_share / num_real), x.new_full((replay_size,), (1 - current_share) / replay_size)]
        )

    def _append(self, strategy, teacher, replay_size: int) -> torch.Tensor:
        """Append ``replay_size`` teacher samples (images, labels, task labels) to the minibatch; return the real images."""
        x, y = strategy.mbatch[0], strategy.mbatch[1]
        num_real = x.shape[0]
        with torch.no_grad():
            z_continuous, z_discrete, components = teacher.sample_latent(replay_size)
            replay_logits = teacher.decode(z_continuous, z_discrete)
            replay_x = torch.sigmoid(replay_logits)
            teacher_loc, teacher_scale, teacher_discrete_logits = teacher.encode(replay_x)
            if self.label_source == "posterior":
                replay_class_logits = teacher.classify_posterior_mode(teacher_loc, teacher_discrete_logits)
            else:
                replay_class_logits = teacher.classify(z_continuous, z_discrete)
        if self.soft_labels:
            real_targets = y if torch.is_floating_point(y) else F.one_hot(y, teacher.num_classes).to(x.dtype)
            targets = torch.cat([real_targets, replay_class_logits.softmax(-1)])
        else:
            targets = torch.cat([y, replay_class_logits.argmax(-1)])
        strategy.mbatch[0] = torch.cat([x, replay_x])
        strategy.mbatch[1] = targets
        strategy.mbatch[-1] = torch.cat([strategy.mbatch[-1], strategy.mbatch[-1].new_zeros(replay_size)])
        if self.temperature != 1.0:
            # The encoder reads x~ (the Bernoulli mean); the decoder is scored against the tempered x~.
            strategy.mb_reconstruction_targets = torch.cat([x, torch.sigmoid(replay_logits / self.temperature)])
        strategy.replay_batch = ReplayBatch(
            num_real, components, teacher_discrete_logits, teacher_loc, teacher_scale, z_continuous, z_discrete
        )
        return x
