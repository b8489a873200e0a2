"""The lifelong plugins one by one: replay, consistency weights, teacher swap keyed on the experience,
BatchNorm statistics, a confident teacher, the fitted component prior."""

from types import SimpleNamespace

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.determinism.rng_manager import RNGManager
from torch.distributions import Normal

from avalanche_lvae import JointBoundLoss, LifelongVAE
from avalanche_lvae.data import load_tensors
from avalanche_lvae.losses import consistency_kl, continuous_consistency_kl
from avalanche_lvae.plugins import (
    ComponentPriorPlugin,
    PosteriorConsistencyPlugin,
    TeacherReplayPlugin,
    TeacherSwapPlugin,
)
from avalanche_lvae.plugins.component_prior import aggregate_posterior_moments
from avalanche_lvae.streams import benchmark_from_tensors, permuted_mnist
from test_strategy import HIDDEN, Recorder, _strategy


@pytest.fixture(scope="module")
def small_stream(data_root):
    return permuted_mnist(n_experiences=3, dataset_root=data_root, max_train_per_experience=256,
                          max_test_per_experience=128)


def test_teacher_replay_is_generated_and_labelled_by_the_teacher():
    torch.manual_seed(0)
    teacher = LifelongVAE(hidden_dim=HIDDEN, discrete_dim=3, classifier_input="latent").eval()
    strategy = SimpleNamespace(
        teacher=teacher, train_mb_size=12, past_distributions=3,
        mbatch=[torch.rand(4, 1, 28, 28), torch.tensor([1, 2, 3, 4]), torch.zeros(4, dtype=torch.long)],
    )
    torch.manual_seed(7)
    TeacherReplayPlugin(mixing="loss_weights", label_source="prior").before_training_iteration(strategy)
    torch.manual_seed(7)
    z_c, z_d, components = teacher.sample_latent(12)
    with torch.no_grad():
        expected_x = torch.sigmoid(teacher.decode(z_c, z_d))
        expected_labels = teacher.classify(z_c, z_d).softmax(-1)
    x, y, t = strategy.mbatch
    assert torch.equal(x[4:], expected_x) and torch.allclose(y[4:], expected_labels)
    assert torch.equal(y[:4].argmax(-1), torch.tensor([1, 2, 3, 4])) and t.shape == (16,)
    assert torch.equal(strategy.replay_batch.components, components)
    assert torch.bincount(components).tolist() == [4, 4, 4]
    # pi = 1/(k+1): the current distribution and each past one weigh the same.
    w = strategy.mb_sample_weights
    assert w[:4].sum().item() == pytest.approx(0.25) and w[4:].sum().item() == pytest.approx(0.75)
    # Hard labels are the teacher's argmax.
    strategy.mbatch = [torch.rand(4, 1, 28, 28), torch.tensor([1, 2, 3, 4]), torch.zeros(4, dtype=torch.long)]
    torch.manual_seed(7)
    plugin = TeacherReplayPlugin(soft_labels=False, mixing="loss_weights", label_source="prior")
    plugin.before_training_iteration(strategy)
    assert torch.equal(strategy.mbatch[1][4:], expected_labels.argmax(-1))
    # label_source="posterior": the teacher classifies x~ as it classifies a real image at test time.
    strategy.mbatch = [torch.rand(4, 1, 28, 28), torch.tensor([1, 2, 3, 4]), torch.zeros(4, dtype=torch.long)]
    torch.manual_seed(7)
    TeacherReplayPlugin(label_source="posterior", mixing="loss_weights").before_training_iteration(strategy)
    with torch.no_grad():
        test_time_labels = teacher(expected_x).class_logits.softmax(-1)
    assert torch.allclose(strategy.mbatch[1][4:], test_time_labels)
    assert not torch.allclose(test_time_labels, expected_labels)
    with pytest.raises(ValueError, match="label_source must be one of"):
        TeacherReplayPlugin(label_source="decoder")


def test_replay_temperature_sharpens_only_the_reconstruction_target():
    # The encoder reads x~ = sigmoid(logits), the papers' Bernoulli mean, at any
    # temperature T; the reconstruction term of the replayed rows is scored
    # against sigmoid(logits / T), which T < 1 moves away from 0.5 (sharper):
    # the plugin hands those targets to the criterion as mb_reconstruction_targets.
    torch.manual_seed(0)
    teacher = LifelongVAE(hidden_dim=HIDDEN, discrete_dim=2).eval()
    real_x = torch.rand(8, 1, 28, 28)

    def replay(**kwargs):
        strategy = SimpleNamespace(
            teacher=teacher, train_mb_size=8, past_distributions=2, mb_sample_weights=None,
            mbatch=[real_x, torch.arange(8), torch.zeros(8, dtype=torch.long)],
        )
        torch.manual_seed(3)
        plugin = TeacherReplayPlugin(**kwargs)
        plugin.before_training_iteration(strategy)
        return plugin, strategy

    _, plain = replay()
    _, tempered = replay(temperature=0.5)
    r = plain.replay_batch
    with torch.no_grad():
        logits = teacher.decode(r.z_continuous, r.z_discrete)
    assert getattr(plain, "mb_reconstruction_targets", None) is None
    assert getattr(replay(temperature=1.0)[1], "mb_reconstruction_targets", None) is None
    for part in range(3):  # same images, labels and task labels whatever T
        assert torch.equal(tempered.mbatch[part], plain.mbatch[part])
    assert torch.equal(tempered.mbatch[0][r.num_real:], torch.sigmoid(logits))
    assert torch.equal(tempered.replay_batch.teacher_discrete_logits, r.teacher_discrete_logits)
    # The criterion's targets: the real rows unchanged, the replayed rows sharpened.
    recon_targets = tempered.mb_reconstruction_targets
    assert torch.equal(recon_targets[: r.num_real], real_x[: r.num_real])
    sharp = recon_targets[r.num_real:]
    assert torch.allclose(sharp, torch.sigmoid(logits / 0.5))
    assert ((sharp - 0.5).abs() >= (torch.sigmoid(logits) - 0.5).abs()).all()
    output = teacher(tempered.mbatch[0])
    loss = JointBoundLoss()
    assert loss(output, tempered.mbatch[1], reconstruction_targets=recon_targets) != loss(output, tempered.mbatch[1])
    with pytest.raises(ValueError, match="reconstruction_targets must have the inputs' shape"):
        loss(output, tempered.mbatch[1], reconstruction_targets=sharp)
    for bad in (0, -1.0, float("inf"), "0.5"):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            TeacherReplayPlugin(temperature=bad)


def test_distillation_labels_replay_at_temperature_and_scores_it_at_that_temperature():
    torch.manual_seed(0)
    teacher = LifelongVAE(hidden_dim=HIDDEN, discrete_dim=2).eval()
    strategy = SimpleNamespace(
        teacher=teacher, train_mb_size=6, clock=SimpleNamespace(train_exp_counter=2), past_distributions=2,
        mbatch=[torch.rand(4, 1, 28, 28), torch.tensor([1, 2, 3, 4]), torch.zeros(4, dtype=torch.long)],
    )
    TeacherReplayPlugin(mixing="loss_weights", distillation_temperature=2.0).before_training_iteration(strategy)
    x, y, _ = strategy.mbatch
    with torch.no_grad():
        teacher_logits = teacher.encode_and_classify(x[4:])[3]
    # Replay labels: the teacher's test-time logits (its features) softened at T = 2; real rows one-hot at T = 1.
    assert torch.allclose(y[4:], (teacher_logits / 2).softmax(-1), atol=1e-6)
    assert torch.equal(y[:4].argmax(-1), torch.tensor([1, 2, 3, 4]))
    assert strategy.mb_class_temperatures.tolist() == [1.0] * 4 + [2.0] * 6
    # Without a temperature the papers' soft labels are the plain probabilities and no temperatures are set.
    strategy.mbatch = [torch.rand(4, 1, 28, 28), torch.tensor([1, 2, 3, 4]), torch.zeros(4, dtype=torch.long)]
    strategy.mb_class_temperatures = None
    TeacherReplayPlugin(mixing="loss_weights").before_training_iteration(strategy)
    with torch.no_grad():
        teacher_logits = teacher.encode_and_classify(strategy.mbatch[0][4:])[3]
    assert torch.allclose(strategy.mbatch[1][4:], teacher_logits.softmax(-1))
    assert strategy.mb_class_temperatures is None
    with pytest.raises(ValueError, match="soft_labels=True"):
        TeacherReplayPlugin(soft_labels=False, distillation_temperature=2.0)
    with pytest.raises(ValueError, match="distillation_temperature"):
        TeacherReplayPlugin(distillation_temperature=0.0)


def test_batch_composition_keeps_the_minibatch_size_with_equal_shares():
    torch.manual_seed(0)
    teacher = LifelongVAE(hidden_dim=HIDDEN, discrete_dim=3).eval()
    real_x, real_y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    strategy = SimpleNamespace(
        teacher=teacher, train_mb_size=16, past_distributions=3, mb_sample_weights=None,
        mbatch=[real_x, real_y, torch.zeros(16, dtype=torch.long)],
    )
    TeacherReplayPlugin(mixing="batch_composition").before_training_iteration(strategy)
    x, y, t = strategy.mbatch
    # B = 16 rows stay 16: floor(16 * 3/4) = 12 replayed, the first 4 real rows kept.
    assert x.shape[0] == y.shape[0] == t.shape[0] == 16
    assert torch.equal(x[:4], real_x[:4]) and torch.equal(y[:4].argmax(-1), real_y[:4])
    assert strategy.replay_batch.num_real == 4
    # Four rows per distribution, current and each of the three past ones: a plain mean is fair.
    assert torch.bincount(strategy.replay_batch.components).tolist() == [4, 4, 4]
    assert strategy.mb_sample_weights is None
    # At least one real row stays, however many distributions were seen.
    strategy.mbatch = [torch.rand(2, 1, 28, 28), torch.tensor([1, 2]), torch.zeros(2, dtype=torch.long)]
    strategy.past_distributions = 9
    TeacherReplayPlugin(mixing="batch_composition").before_training_iteration(strategy)
    assert strategy.replay_batch.num_real == 1 and strategy.mbatch[0].shape[0] == 2
    with pytest.raises(ValueError, match="mixing must be one of"):
        TeacherReplayPlugin(mixing="interleave")
    with pytest.raises(ValueError, match="replay_size only applies"):
        TeacherReplayPlugin(replay_size=8, mixing="batch_composition")


def _student_with_replay(num_real=3, replay_size=6, mixing="loss_weights"):
    """A grown student and a strategy namespace whose minibatch holds real rows then teacher replay."""
    torch.manual_seed(0)
    teacher = LifelongVAE(hidden_dim=HIDDEN, discrete_dim=2).eval()
    student = LifelongVAE(hidden_dim=HIDDEN, discrete_dim=2)
    student.grow_discrete(1)
    strategy = SimpleNamespace(
        teacher=teacher, model=student, train_mb_size=replay_size, past_distributions=2,
        mbatch=[torch.rand(num_real, 1, 28, 28), torch.arange(num_real) % 10, torch.zeros(num_real, dtype=torch.long)],
        loss=torch.tensor(0.0),
    )
    TeacherReplayPlugin(mixing=mixing, replay_size=replay_size if mixing == "loss_weights" else None
                        ).before_training_iteration(strategy)
    strategy.lvae_output = student(strategy.mbatch[0])
    return strategy


@pytest.mark.parametrize("mixing", ["batch_composition", "loss_weights"])
def test_consistency_terms_weigh_each_replayed_row_as_the_elbo_does(mixing):
    strategy = _student_with_replay(num_real=12, replay_size=6, mixing=mixing)
    PosteriorConsistencyPlugin(consistency_weight=2.0, continuous_consistency_weight=0.5).before_backward(strategy)
    replay, out = strategy.replay_batch, strategy.lvae_output
    rows = slice(replay.num_real, None)
    kl = consistency_kl(out.discrete_logits[rows], replay.teacher_discrete_logits)
    continuous = continuous_consistency_kl(Normal(out.continuous_loc[rows], out.continuous_scale[rows]),
                                           Normal(replay.teacher_continuous_loc, replay.teacher_continuous_scale))
    if mixing == "batch_composition":
        # B = 12 rows, 8 of them replay (k = 2): the ELBO is the plain mean over all 12 rows.
        assert len(out) == 12 and replay.num_real == 4
        weights = torch.full((8,), 1 / 12)
    else:
        # 12 real rows + 6 replayed: pi = 1/3 over the real rows, (1 - pi)/R = (2/3)/6 on each replayed one.
        weights = torch.full((6,), (2 / 3) / 6)
        assert torch.allclose(strategy.mb_sample_weights[rows], weights)
    expected, expected_continuous = (weights * kl).sum(), (weights * continuous).sum()
    assert strategy.loss_terms["consistency"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert strategy.loss_terms["continuous_consistency"].item() == pytest.approx(expected_continuous.item(), rel=1e-5)
    assert strategy.loss.item() == pytest.approx(2.0 * expected.item() + 0.5 * expected_continuous.item(), rel=1e-5)
    # Not the mean over the replayed rows alone, which would weigh them more than their ELBO does.
    assert strategy.loss_terms["consistency"].item() < 0.7 * kl.mean().item()


def test_training_twice_on_one_experience_swaps_and_grows_once(small_stream):
    replayed = []

    class Replayed(SupervisedPlugin):
        def before_forward(self, strategy, **kw):
            if strategy.replay_batch is not None:
                replayed.append((strategy.replay_batch.num_real, len(strategy.replay_batch.components)))

    strategy = _strategy(plugins=[Replayed()])
    first = small_stream.train_stream[0]
    strategy.train(first)
    strategy.train(first)  # e.g. an epoch-by-epoch loop: the same distribution continues
    assert strategy.teacher is None and strategy.model.discrete_dim == 1 and strategy.past_distributions == 0
    strategy.train(small_stream.train_stream[1])
    teacher = strategy.teacher
    assert strategy.model.discrete_dim == 2 and strategy.past_distributions == 1 and teacher.discrete_dim == 1
    replayed.clear()
    strategy.train(small_stream.train_stream[1])  # a new experience object of the same experience
    assert strategy.teacher is teacher and strategy.model.discrete_dim == 2 and strategy.past_distributions == 1
    # Still k = 1 past distribution: half of each minibatch is replay.
    assert replayed and set(replayed) == {(32, 32)}
    strategy.train(small_stream.train_stream[2])
    assert strategy.model.discrete_dim == 3 and strategy.past_distributions == 2 and strategy.teacher is not teacher


def test_start_new_distribution_swaps_inside_an_experience(small_stream):
    events = []

    class Boundary(SupervisedPlugin):
        """Detects a new distribution at the third iteration, as a task-free strategy would."""

        def before_training_iteration(self, strategy, **kw):
            if strategy.clock.train_exp_iterations == 2 and strategy.teacher is None:
                swap = next(p for p in strategy.plugins if isinstance(p, TeacherSwapPlugin))
                trained = {k: v.clone() for k, v in strategy.model.state_dict().items()}
                swap.start_new_distribution(strategy)
                events.append(("swap", trained))

        def before_forward(self, strategy, **kw):
            if strategy.replay_batch is not None:
                events.append(("replay", strategy.replay_batch.components))

    strategy = _strategy(plugins=[Boundary()])
    strategy.train(small_stream.train_stream[0])
    (kind, trained), *replays = events
    assert kind == "swap" and replays and all(k == "replay" and (c == 0).all() for k, c in replays)
    teacher = strategy.teacher
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in trained.items())
    assert strategy.model.discrete_dim == 2 and strategy.past_distributions == 1
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_without_growth_replay_draws_only_the_components_of_past_distributions(small_stream):
    recorder = Recorder()
    strategy = _strategy(plugins=[recorder], discrete_dim=3, grow_discrete=False)
    for exp in small_stream.train_stream:
        strategy.train(exp)
    assert strategy.model.discrete_dim == 3
    # After k experiences the teacher has learned k distributions; pi = 1/(k+1) counts
    # those, so replay uses their k values of z_d, never a value no distribution trained.
    seen = {k: set() for k in (1, 2)}
    for k, components in recorder.replay_components:
        seen[k].update(components.tolist())
    assert seen == {1: {0}, 2: {0, 1}}


def test_extra_passes_leave_batchnorm_statistics_to_the_real_minibatch(small_stream):
    checked = []

    def bn_buffers(model):
        return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}

    class Statistics(SupervisedPlugin):
        def after_forward(self, strategy, **kw):
            self.after_real_forward = bn_buffers(strategy.model)

        def after_training_iteration(self, strategy, **kw):
            after = bn_buffers(strategy.model)
            checked.append(all(torch.equal(after[k], v) for k, v in self.after_real_forward.items()))

    # L_I runs on every iteration and replay from the second experience on.
    strategy = _strategy(plugins=[Statistics()], info_weight=0.01)
    for exp in small_stream.train_stream[:2]:
        strategy.train(exp)
    assert checked and all(checked)
    assert "information" in strategy.loss_terms


def test_a_teacher_certain_beyond_float32_does_not_stop_training(data_root):
    # The run: LifelongVAEStrategy(criterion=JointBoundLoss(100.0), replay_label_source="posterior")
    # on class-incremental MNIST (two classes per experience). At full size (Avalanche's SplitMNIST,
    # 5 epochs) the teacher's z_d logits drift past a gap of ~104, where its probabilities underflow
    # float32; the consistency KL then went inf. Shortened: 3 x 2 classes, 256 images each, and the
    # student's z_d head is scaled by 1e4 after experience 1, so that its copy -- the teacher of
    # experience 2 -- has such gaps at once.
    x, y = load_tensors("MNIST", True, data_root)
    train = []
    for pair in range(3):
        index = ((y == 2 * pair) | (y == 2 * pair + 1)).nonzero().squeeze(1)[:256]
        train.append((x[index], y[index]))
    stream = benchmark_from_tensors(train, train)
    gaps = []

    class Confident(SupervisedPlugin):
        def after_training_exp(self, strategy, **kw):
            if strategy.experience.current_experience == 1:
                with torch.no_grad():
                    strategy.model.discrete_head.weight.mul_(1e4)
                    strategy.model.discrete_head.bias.mul_(1e4)

        def before_backward(self, strategy, **kw):
            if strategy.replay_batch is not None and strategy.past_distributions == 2:
                logits = strategy.replay_batch.teacher_discrete_logits
                gaps.append(float((logits.max(1).values - logits.min(1).values).max()))

    RNGManager.set_random_seeds(0)
    strategy = _strategy(plugins=[Confident()], criterion=JointBoundLoss(100.0), replay_label_source="posterior")
    for exp in stream.train_stream:
        strategy.train(exp)
    assert max(gaps) > 200  # the teacher's smallest probabilities are below float32's range
    assert torch.isfinite(strategy.loss_terms["consistency"]) and strategy.model.discrete_dim == 3


def test_aggregate_posterior_moments_match_the_gaussian_mixture():
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    torch.manual_seed(0)
    loc, scale = torch.randn(50, 4), torch.rand(50, 4) + 0.1
    mean, covariance = aggregate_posterior_moments(loc, scale)
    mixture = MixtureSameFamily(Categorical(logits=torch.zeros(50)), Independent(Normal(loc, scale), 1))
    assert torch.allclose(mean, mixture.mean, atol=1e-6)
    # torch's mixture variance uses the population (1/N) covariance of the means.
    population = covariance - (loc - mean).T @ (loc - mean) / 49 + (loc - mean).T @ (loc - mean) / 50
    assert torch.allclose(population.diagonal(), mixture.variance, atol=1e-5)
    assert torch.allclose(covariance, covariance.T)


def test_fitted_component_prior_fits_every_seen_distribution_without_touching_the_rng(small_stream):
    fitted_after = []

    class AfterFit(SupervisedPlugin):
        def after_training_exp(self, strategy, **kw):
            fitted_after.append(strategy.model.component_loc.clone())

    strategy = _strategy(component_prior="fitted", plugins=[AfterFit()])
    for exp in small_stream.train_stream:
        strategy.train(exp)
    # After experience k, components 0..k all carry a fitted (non-standard) prior.
    for k, loc in enumerate(fitted_after):
        assert loc.shape == (k + 1, 14) and (loc.abs().sum(1) > 0).all()
    # The teacher of the last experience is the student after experience 1, prior included.
    assert torch.equal(strategy.teacher.component_loc, fitted_after[1])
    # Refitting draws teacher samples in a forked RNG: the training stream is unchanged.
    strategy.experience = small_stream.train_stream[2]  # Avalanche clears it after train()
    state = torch.get_rng_state()
    ComponentPriorPlugin(n_samples=64).after_training_exp(strategy)
    assert torch.equal(torch.get_rng_state(), state)
    assert strategy.model.training
    with pytest.raises(ValueError, match="component_prior"):
        _strategy(component_prior="gaussian")
