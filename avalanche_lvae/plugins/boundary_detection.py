"""Task-free training: detect where a new distribution starts (after CURL, Rao et al. 2019, Sec. 3.3)."""

from dataclasses import asdict, dataclass
from typing import List, Optional

import torch
from avalanche.core import SupervisedPlugin

from ..losses import negative_joint_bound
from ..validation import check_bool, check_positive_float, check_positive_int
from .teacher_swap import TeacherSwapPlugin, check_lifelong_model

__all__ = ["BoundaryDetectionPlugin", "Detection"]


@dataclass
class Detection:
    """One filled buffer of poorly explained samples and what was decided.

    Attributes:
        sample_index: incoming training rows seen when the buffer filled (the
            decision point, counted from the first row the plugin saw).
        onset_index: index of the oldest buffered row (an estimate of where the
            new distribution started).
        buffer_z: median z-score of the buffered rows re-scored by the student at
            the decision.
        outcome: ``"swap"`` (teacher swap and z_d growth), ``"veto"`` (the
            student now explains the buffer: no swap) or ``"cap"`` (no swap,
            ``max_distributions`` reached).
        distributions: number of distributions the student models after the decision.
    """

    sample_index: int
    onset_index: int
    buffer_z: float
    outcome: str
    distributions: int

    def as_dict(self) -> dict:
        return asdict(self)


class BoundaryDetectionPlugin(SupervisedPlugin):
    """Find distribution boundaries in the training stream and swap the teacher there.

    Given boundaries are ignored: :class:`TeacherSwapPlugin`'s swap
    (:meth:`~TeacherSwapPlugin.start_new_distribution`: teacher = frozen
    student, z_d grown by one, BatchNorm statistics and optimizer state reset)
    runs when the student meets data it cannot explain, which works on a
    single merged experience and on Avalanche's online streams alike.

    Detection (CURL's dynamic expansion, with its fixed ELBO threshold of
    -200 nats replaced by z-scores against what the student has learned,
    because the -ELBO scale differs between data sets and falls during
    training):

    1. Each incoming minibatch is scored before the student trains on it,
       per row and in nats: the -ELBO and, with ``score="joint"`` (default),
       -log p(y|z) -- the two parts of the student's objective (CCL-GM Eq. 4),
       each against its own statistics; CN-DPM likewise assigns data by
       p(x) and p(y|x). Scoring runs in eval mode at the posterior mode: no
       random draws, no BatchNorm update, so scoring alone leaves the
       training run unchanged. ``score="elbo"`` ignores the labels.
    2. Running mean m and standard deviation s (at least ``min_std``) of the
       scores of well-explained rows: exponential moving averages (over
       about ``stats_horizon`` rows) of the minibatch means and of the
       spread of the rows within their minibatch, restarted after every swap.
    3. After ``burn_in`` rows (at the start) or ``wait`` rows (after a swap or
       a cap), a row whose largest z-score (score - m) / s exceeds
       ``z_threshold`` is poorly explained: it enters the buffer; the other
       rows update m, s. When at least ``buffer_size / window`` of the
       minibatch is poorly explained (the rate detection looks for), those
       rows are also held out of the minibatch, whose place the last
       well-explained rows take (the student must not learn the new data
       before the swap, or it would stop looking new and the teacher would
       absorb it, as CN-DPM's short-term memory keeps it from its experts);
       a smaller share, a learned distribution's hard rows, is trained on at
       once. Buffered rows older than ``window`` rows leave the buffer (held
       ones are released into training), so only a sustained rate of at
       least ``buffer_size / window`` poor rows, not the tail of one
       distribution, fills the buffer.
    4. When ``buffer_size`` rows are buffered, the buffer is re-scored by the
       current student. Veto: if its median z-score is no longer above
       ``z_threshold`` the student now explains these rows as well as what it
       knew, so they are no new distribution (this catches detections while
       the statistics lag behind a student that is still improving); cap:
       with ``max_distributions`` already modelled z_d does not grow (the
       rows are trained on by the current student, then ``wait`` rows pass).
       Otherwise the teacher swap runs, and the buffered rows are prepended
       to the next minibatches ``buffer_passes`` times, so the grown student
       trains on the new distribution's first rows, with the teacher's
       replay, instead of losing them. Vetoed and capped rows that were
       held are prepended once.

    Every decision is appended to ``detections`` (:class:`Detection`); row
    indices count the incoming training rows, repeated passes included.
    Defaults were chosen on streams the benchmarks do not test (split
    FashionMNIST 5 x 2, MNIST -> FashionMNIST, and i.i.d. FashionMNIST for
    the false alarms; ``docs/task_free.md`` has the measurements).

    Callbacks:
        ``before_training``: check the model is a LifelongVAE.
        ``before_training_exp``: at the first experience ever, no teacher;
            later experience boundaries do nothing (task-free).
        ``before_training_iteration``: score the incoming rows, update the
            statistics and the buffer, decide, swap, and prepend buffered
            rows. It must run before :class:`TeacherReplayPlugin`'s (the
            strategy installs it first), so that the replay of this very
            minibatch uses the new teacher; the swap counts the distribution
            in ``strategy.past_distributions`` (k of LGM Sec. 4's
            pi = 1/(k+1)), which the replay plugin reads.

    Args:
        grow_discrete: grow z_d by one value at each accepted detection.
        z_threshold: a row is poorly explained above this z-score (default 3).
        buffer_size: poorly explained rows that trigger a decision (CURL: 100).
        window: buffered rows older than this many incoming rows are dropped
            (default 300: a poor rate of 1/3 sustained over 300 rows).
        burn_in: rows before the first possible detection (default 2000).
        wait: rows after a swap before the next possible detection (default 2000).
        stats_horizon: rows over which m and s average (default 500).
        max_distributions: z_d never grows beyond this many values (default 10).
        buffer_passes: how often the buffer is trained on after a swap (default 2).
        score: ``"joint"`` (default: -ELBO and -log p(y|z)) or ``"elbo"``.
        min_std: floor of s in nats (default 1), so that a score that is
            almost constant on learned data (a confident classifier's
            -log p(y|z)) does not flag rows that differ from it by a fraction
            of a nat.
    """

    def __init__(
        self,
        grow_discrete: bool = True,
        z_threshold: float = 3.0,
        buffer_size: int = 100,
        window: int = 300,
        burn_in: int = 2000,
        wait: int = 2000,
        stats_horizon: int = 500,
        max_distributions: int = 10,
        buffer_passes: int = 2,
        score: str = "joint",
        min_std: float = 1.0,
    ):
        super().__init__()
        self.swap = TeacherSwapPlugin(grow_discrete=check_bool(grow_discrete, "grow_discrete"))
        self.z_threshold = check_positive_float(z_threshold, "z_threshold")
        self.buffer_size = check_positive_int(buffer_size, "buffer_size")
        self.window = check_positive_int(window, "window")
        if self.window < self.buffer_size:
            raise ValueError(f"window ({window}) must be at least buffer_size ({buffer_size}): the buffer could "
                             "never fill. Raise window or lower buffer_size.")
        self.burn_in = check_positive_int(burn_in, "burn_in")
        self.wait = check_positive_int(wait, "wait")
        self.stats_horizon = check_positive_int(stats_horizon, "stats_horizon")
        self.max_distributions = check_positive_int(max_distributions, "max_distributions")
        self.buffer_passes = int(buffer_passes)
        if isinstance(buffer_passes, bool) or self.buffer_passes != buffer_passes or buffer_passes < 0:
            raise ValueError(f"buffer_passes must be a non-negative int, got {buffer_passes!r}.")
        if score not in ("joint", "elbo"):
            raise ValueError(f'score must be "joint" (-ELBO and -log p(y|z)) or "elbo" (labels unused), got {score!r}.')
        self.use_labels = score == "joint"
        self.min_std = check_positive_float(min_std, "min_std")
        self.samples_seen = 0
        self.distributions = 1
        self.detections: List[Detection] = []
        # Per minibatch: (first row index, mean of each score column, fraction of poor rows or None while quiet).
        self.trace: List[tuple] = []
        self._quiet_until = self.burn_in  # no buffering before this sample index
        self._mean: Optional[torch.Tensor] = None  # per score column
        self._var: Optional[torch.Tensor] = None
        self._buffer: List[tuple] = []  # (row index, (x, y, t), held out of training) per poorly explained row
        self._pending: List[tuple] = []  # (x, y, t) rows to prepend to the next minibatches
        self._recent: Optional[List[torch.Tensor]] = None  # the last well-explained rows

    @property
    def hold_share(self) -> float:
        """The share of poor rows in a minibatch that detection looks for; above it they are held out."""
        return self.buffer_size / self.window

    # ------------------------------------------------------------ callbacks
    def before_training(self, strategy, **kwargs):
        check_lifelong_model(strategy, "BoundaryDetectionPlugin")

    def before_training_exp(self, strategy, **kwargs):
        if self.samples_seen == 0 and not self.detections:
            strategy.teacher = None  # the first data train a plain student

    def before_training_iteration(self, strategy, **kwargs):
        first_index = self.samples_seen
        self.samples_seen += strategy.mbatch[0].shape[0]
        scores = self.score(strategy.model, strategy.mbatch[0], strategy.mbatch[1])
        self._record(first_index, scores)
        if self.samples_seen <= self._quiet_until or self._mean is None:
            self._update_statistics(scores)
        else:
            poor = self.z_scores(scores) > self.z_threshold
            self._update_statistics(scores[~poor])
            self._hold(strategy, first_index, poor)
            if len(self._buffer) >= self.buffer_size:
                self._decide(strategy)
        self._remember(strategy.mbatch)
        self._prepend_pending(strategy)

    # ------------------------------------------------------------ detection
    def score(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample scores ``[N, columns]`` in nats: -ELBO, and with ``score="joint"`` -log p(y|z).

        Computed in eval mode at the posterior mode, without gradients.
        """
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                terms = negative_joint_bound(model(x, sample=False), x, y if self.use_labels else None)
        finally:
            model.train(was_training)
        columns = [terms.negative_elbo] + ([terms.classification] if self.use_labels else [])
        return torch.stack(columns, dim=1)

    def z_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """max over the score columns of (score - m) / s, against the well-explained rows' statistics."""
        std = self._var.sqrt().clamp_min(self.min_std)
        return ((scores - self._mean) / std).max(dim=1).values

    def _record(self, first_index: int, scores: torch.Tensor) -> None:
        poor = None if self._mean is None else float((self.z_scores(scores) > self.z_threshold).float().mean())
        self.trace.append((first_index, *scores.mean(0).tolist(), poor))

    def _update_statistics(self, scores: torch.Tensor) -> None:
        if scores.shape[0] == 0:
            return
        mean, var = scores.mean(0), scores.var(0, unbiased=False)
        if self._mean is None:
            self._mean, self._var = mean, var
            return
        # EMAs of the mean and of the within-minibatch variance: s is the spread
        # of the rows about their minibatch's mean, not inflated by the fall of
        # the -ELBO while the student is still learning.
        rate = min(1.0, scores.shape[0] / self.stats_horizon)
        self._mean = (1 - rate) * self._mean + rate * mean
        self._var = (1 - rate) * self._var + rate * var

    def _hold(self, strategy, first_index: int, poor: torch.Tensor) -> None:
        """Buffer the poorly explained rows; hold them out of the minibatch when they are a sustained share of it."""
        batch = strategy.mbatch
        # A new distribution makes most of a minibatch poor; a learned one's
        # own hard rows come a few per minibatch and are trained on at once
        # (holding them back too cost split-MNIST accuracy, docs/task_free.md).
        held = float(poor.float().mean()) >= self.hold_share
        for row in torch.nonzero(poor).flatten().tolist():
            self._buffer.append((first_index + row, tuple(part[row] for part in batch), held))
        oldest = self.samples_seen - self.window
        # Held rows are released into training, not lost; the others were trained on already.
        self._pending += [rows for index, rows, was_held in self._buffer if index < oldest and was_held]
        self._buffer = [item for item in self._buffer if item[0] >= oldest]
        if held:
            # The student must not learn the new data before the swap (it would
            # stop looking new, and the teacher would absorb it): the minibatch
            # keeps its size with the last well-explained rows seen.
            fill = torch.arange(int(poor.sum())) % self._recent[0].shape[0]
            strategy.mbatch = [torch.cat([part[~poor], recent[fill]]) for part, recent in zip(batch, self._recent)]

    def _remember(self, batch) -> None:
        """Keep the last minibatch-size well-explained rows (the filler of :meth:`_hold`)."""
        size = batch[0].shape[0]
        if self._recent is None:
            self._recent = [part.detach() for part in batch]
        else:
            self._recent = [torch.cat([old, part.detach()])[-size:] for old, part in zip(self._recent, batch)]

    def _decide(self, strategy) -> None:
        x, y = (torch.stack([rows[i] for _, rows, _ in self._buffer]) for i in (0, 1))
        buffer_z = float(self.z_scores(self.score(strategy.model, x, y)).median())
        if buffer_z <= self.z_threshold:
            outcome = "veto"
        elif self.distributions >= self.max_distributions:
            outcome = "cap"
        else:
            outcome = "swap"
            self.swap.start_new_distribution(strategy)
            self.distributions += 1
            self._mean, self._var = None, None  # a new distribution: its statistics start afresh
        if outcome != "veto":
            self._quiet_until = self.samples_seen + self.wait
        # Trained on: buffer_passes times by the grown student; if vetoed or
        # capped, the held rows once (the others were trained on already).
        if outcome == "swap":
            self._pending += [rows for _, rows, _ in self._buffer] * self.buffer_passes
        else:
            self._pending += [rows for _, rows, held in self._buffer if held]
        self.detections.append(
            Detection(self.samples_seen, self._buffer[0][0], buffer_z, outcome, self.distributions)
        )
        self._buffer = []

    def _prepend_pending(self, strategy) -> None:
        if not self._pending:
            return
        size = strategy.mbatch[0].shape[0]
        chunk, self._pending = self._pending[:size], self._pending[size:]
        strategy.mbatch = [torch.cat([torch.stack([rows[i] for rows in chunk]).to(part.device), part])
                           for i, part in enumerate(strategy.mbatch)]
