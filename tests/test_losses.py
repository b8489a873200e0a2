"""Losses: every KL term against its closed form, the joint bound, L_I, bad input."""

import copy
import math

import pytest
import torch

from avalanche_lvae import JointBoundLoss, LifelongVAE
from avalanche_lvae.losses import (
    consistency_kl,
    continuous_consistency_kl,
    distillation_loss,
    frozen_batchnorm_statistics,
    information_restriction,
    negative_joint_bound,
)
from torch.distributions import Normal


def _categorical_kl(p, q):
    return (p * (p.log() - q.log())).sum(-1)


def test_continuous_kl_to_standard_normal_matches_closed_form():
    torch.manual_seed(0)
    model = LifelongVAE(hidden_dim=32).eval()
    x = torch.rand(5, 1, 28, 28)
    out = model(x)
    terms = negative_joint_bound(out, x)
    mu, sigma = out.continuous_loc, out.continuous_scale
    closed = 0.5 * (mu**2 + sigma**2 - 1 - 2 * sigma.log()).sum(-1)
    assert torch.allclose(terms.continuous_kl, closed, atol=1e-5)


def test_discrete_kl_to_uniform_matches_closed_form():
    torch.manual_seed(0)
    model = LifelongVAE(hidden_dim=32, discrete_dim=4).eval()
    x = torch.rand(5, 1, 28, 28)
    out = model(x)
    q = out.discrete_logits.softmax(-1)
    closed = (q * (q * 4).log()).sum(-1)  # KL(q || 1/J) = sum q log(q J)
    assert torch.allclose(negative_joint_bound(out, x).discrete_kl, closed, atol=1e-5)


def test_reconstruction_is_bernoulli_cross_entropy_and_classification_is_nll():
    torch.manual_seed(0)
    model = LifelongVAE(hidden_dim=32).eval()
    x, y = torch.rand(5, 1, 28, 28), torch.tensor([0, 1, 2, 3, 9])
    out = model(x)
    terms = negative_joint_bound(out, x, y)
    p = torch.sigmoid(out.reconstruction_logits)
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(-1)
    assert torch.allclose(terms.reconstruction, bce, rtol=1e-4)
    nll = -out.class_logits.log_softmax(-1)[torch.arange(5), y]
    assert torch.allclose(terms.classification, nll, atol=1e-5)
    assert torch.allclose(terms.total, terms.negative_elbo + nll)
    # Soft one-hot labels give the same classification term as hard labels.
    soft = torch.nn.functional.one_hot(y, 10).float()
    assert torch.allclose(negative_joint_bound(out, x, soft).classification, nll, atol=1e-5)


@pytest.mark.parametrize("reverse", [True, False])
def test_consistency_kl_matches_closed_form_same_size(reverse):
    torch.manual_seed(0)
    s, t = torch.randn(6, 3), torch.randn(6, 3)
    p, q = s.softmax(-1), t.softmax(-1)
    expected = _categorical_kl(p, q) if reverse else _categorical_kl(q, p)
    assert torch.allclose(consistency_kl(s, t, reverse=reverse), expected, atol=1e-5)


@pytest.mark.parametrize("reverse", [True, False])
def test_consistency_kl_zero_pads_the_smaller_teacher(reverse):
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(6, 2)
    mass = 1e-6
    q = torch.cat([t.softmax(-1) * (1 - 2 * mass), torch.full((6, 2), mass)], -1)
    p = s.softmax(-1)
    expected = _categorical_kl(p, q) if reverse else _categorical_kl(q, p)
    got = consistency_kl(s, t, reverse=reverse, padding_mass=mass)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("gap", [30.0, 200.0, 5000.0])
def test_consistency_kl_is_exact_and_finite_for_a_teacher_certain_beyond_float32(gap):
    # A teacher sure of value 0 by a logit gap `gap`: q_teacher = (1, e^-gap) up to
    # rounding, far below float32's eps (30) or its smallest number (200, 5000).
    # Closed forms in float64 from the log-probabilities:
    #   reverse KL[(1/2, 1/2) || q] = 1/2 log(1/2) + 1/2 (log(1/2) + gap) + 1/2 log(1 + e^-gap)
    #   forward KL[q || (1/2, 1/2)] = log 2 - H(q) ~= log 2 (the e^-gap terms vanish).
    student, teacher = torch.zeros(1, 2), torch.tensor([[0.0, -gap]])
    reverse = consistency_kl(student, teacher, reverse=True)
    expected = math.log(0.5) + 0.5 * gap + 0.5 * math.log1p(math.exp(-gap))
    assert torch.isfinite(reverse).all() and reverse.item() == pytest.approx(expected, rel=1e-6)
    assert consistency_kl(student, teacher, reverse=False).item() == pytest.approx(math.log(2), abs=1e-5)
    # A student that puts (almost) all its mass where the teacher has e^-gap: KL ~= gap.
    assert consistency_kl(torch.tensor([[-gap, 0.0]]), teacher).item() == pytest.approx(gap, rel=1e-5)
    # Grown student (3 values, the new one padded with mass m): q_teacher = ((1-m), (1-m) e^-gap, m).
    mass = 1e-6
    grown = consistency_kl(torch.zeros(1, 3), teacher, padding_mass=mass).item()
    third = 1.0 / 3
    log_q = [math.log1p(-mass), math.log1p(-mass) - gap, math.log(mass)]
    assert grown == pytest.approx(sum(third * (math.log(third) - lq) for lq in log_q), rel=1e-6)
    # The student's gradient stays finite too (training continues).
    logits = torch.zeros(1, 3, requires_grad=True)
    consistency_kl(logits, teacher).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_consistency_kl_is_zero_for_identical_posteriors_and_rejects_shrinking():
    logits = torch.randn(4, 3)
    assert torch.allclose(consistency_kl(logits, logits), torch.zeros(4), atol=1e-6)
    with pytest.raises(ValueError, match="at least as large"):
        consistency_kl(torch.randn(4, 2), torch.randn(4, 3))


def test_gaussian_consistency_kl_matches_closed_form():
    torch.manual_seed(0)
    m1, m2 = torch.randn(5, 14), torch.randn(5, 14)
    s1, s2 = torch.rand(5, 14) + 0.1, torch.rand(5, 14) + 0.1
    closed = (torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum(-1)
    got = continuous_consistency_kl(Normal(m1, s1), Normal(m2, s2))
    assert torch.allclose(got, closed, atol=1e-5)
    # The Gaussian form is analytic in the scales and means (no probabilities that
    # underflow): at the model's smallest scale (1e-4) and far-apart means it stays exact.
    m1, m2 = torch.full((1, 2), 500.0), torch.full((1, 2), -500.0)
    s1, s2 = torch.full((1, 2), 1.0), torch.full((1, 2), 1e-4)
    closed = (math.log(1e-4) + (1.0 + 1000.0**2) / (2 * 1e-8) - 0.5) * 2
    got = continuous_consistency_kl(Normal(m1, s1), Normal(m2, s2)).item()
    assert math.isfinite(got) and got == pytest.approx(closed, rel=1e-5)


def _true_information_gradients(model, n, seed):
    """d L_I / d theta for every parameter, by plain autograd (no gradient reversal)."""
    model.zero_grad()
    torch.manual_seed(seed)
    z_c, z_d, _ = model.sample_latent(n)
    loc, scale, _ = model.encode(torch.sigmoid(model.decode(z_c, z_d)))
    Normal(loc, scale).log_prob(z_c).sum(-1).mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return grads


@pytest.mark.parametrize("train_mode", [False, True])
def test_information_restriction_is_log_q_of_the_generating_z_minimised_by_the_decoder_maximised_by_the_encoder(
        train_mode):
    torch.manual_seed(0)
    model = LifelongVAE(hidden_dim=32, discrete_dim=2).train(train_mode)
    torch.manual_seed(1)
    value = information_restriction(model, 8)
    torch.manual_seed(1)
    z_c, z_d, _ = model.sample_latent(8)
    loc, scale, _ = model.encode(torch.sigmoid(model.decode(z_c, z_d)))
    gauss = -0.5 * (((z_c - loc) / scale) ** 2) - scale.log() - 0.5 * math.log(2 * math.pi)
    assert torch.allclose(value, gauss.sum(-1).mean(), atol=1e-4)
    true = _true_information_gradients(model, 8, seed=1)
    torch.manual_seed(1)
    information_restriction(model, 8).backward()
    assert all(p.requires_grad for p in model.parameters())  # frozen only while computing
    got = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == true.keys()
    # The signs: minimising the returned term, the decoder descends L_I (restricting
    # the information z_c carries) -- its gradient is +dL_I, which the gradient-reversal
    # layer makes so -- while the encoder ascends it (keeps the bound tight): -dL_I.
    decoder = [n for n in got if n.startswith(("decoder", "decoder_projection"))]
    encoder = [n for n in got if n.startswith(("encoder", "continuous_head", "discrete_head"))]
    assert decoder and encoder and set(decoder) | set(encoder) == set(got)
    for name in decoder:
        torch.testing.assert_close(got[name], true[name], msg=f"decoder parameter {name}")
    for name in encoder:
        torch.testing.assert_close(got[name], -true[name], msg=f"encoder parameter {name}")
    assert sum(got[n].abs().sum() for n in decoder) > 0 and sum(got[n].abs().sum() for n in encoder) > 0
    # And as a step: a small step of the decoder along -grad lowers L_I, of the encoder raises it.
    for names, direction in ((decoder, -1), (encoder, +1)):
        stepped = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in stepped.named_parameters():
                if name in names:
                    p -= 1e-3 * got[name] / max(float(got[name].abs().max()), 1e-12)
        torch.manual_seed(1)
        after = information_restriction(stepped, 8).item()
        assert (after - value.item()) * direction > 0, (names[0], value.item(), after)


def test_frozen_batchnorm_statistics_keeps_the_training_pass_and_leaves_the_buffers():
    torch.manual_seed(0)
    model = LifelongVAE(hidden_dim=32).train()
    x = torch.rand(8, 1, 28, 28)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with frozen_batchnorm_statistics(model):
        frozen = model.encode(x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.track_running_stats for m in model.modules() if hasattr(m, "track_running_stats"))
    # The same normalisation as a plain training pass (batch statistics), which does move the buffers.
    plain = model.encode(x)
    assert all(torch.equal(a, b) for a, b in zip(frozen, plain))
    assert not torch.equal(before["encoder.net.1.1.running_mean"], model.state_dict()["encoder.net.1.1.running_mean"])
    # information_restriction runs its passes frozen.
    state = {k: v.clone() for k, v in model.state_dict().items()}
    information_restriction(model, 8)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_joint_bound_decreases_when_training_a_few_steps_on_mnist(data_root):
    from avalanche_lvae.data import load_tensors

    torch.manual_seed(0)
    x, y = load_tensors("MNIST", train=True, root=data_root)
    x, y = x[:512], y[:512]
    model = LifelongVAE(hidden_dim=128)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = JointBoundLoss()

    def evaluate():
        model.eval()
        with torch.no_grad():
            torch.manual_seed(123)
            value = negative_joint_bound(model(x, sample=True), x).negative_elbo.mean().item()
        model.train()
        return value

    start = evaluate()
    for step in range(30):
        idx = torch.randint(0, 512, (128,))
        optimizer.zero_grad()
        criterion(model(x[idx]), y[idx]).backward()
        optimizer.step()
    assert evaluate() < start - 50  # nats: a clear drop, not noise


@pytest.mark.parametrize(
    "targets, message",
    [
        (torch.tensor([0, 1, 2, 10]), r"labels in \[0, 10\]"),
        (torch.tensor([-1, 1, 2, 3]), "num_classes"),
        (torch.tensor([0.0, 1.0, 2.0, 3.0]), "integer"),
        (torch.full((4, 10), 0.5), "sum to 1"),
        (torch.rand(4, 7), "soft targets have shape"),
    ],
)
def test_losses_reject_bad_labels(targets, message):
    model = LifelongVAE(hidden_dim=16)
    out = model(torch.rand(4, 1, 28, 28))
    with pytest.raises(ValueError, match=message):
        JointBoundLoss()(out, targets)


def test_losses_reject_bad_images_and_non_model_outputs():
    model = LifelongVAE(hidden_dim=16)
    x = torch.rand(4, 1, 28, 28)
    out = model(x)
    with pytest.raises(ValueError, match="pixel values"):
        negative_joint_bound(out, x * 255)
    with pytest.raises(ValueError, match="LVAEOutput"):
        JointBoundLoss()(out.class_logits, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="classification_weight"):
        JointBoundLoss(classification_weight=-1)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        information_restriction(model, 0)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_distillation_loss_is_t_squared_kl_at_temperature_t(temperature):
    torch.manual_seed(0)
    teacher, student = torch.randn(5, 10) * 3, (torch.randn(5, 10) * 3).requires_grad_()
    targets = (teacher / temperature).softmax(-1)
    t = torch.full((5,), temperature)
    loss = distillation_loss(student, targets, t)
    student_t = (student / temperature).softmax(-1)
    assert torch.allclose(loss, temperature**2 * _categorical_kl(targets, student_t), atol=1e-5)
    # Hinton et al.: the gradient is T (softmax(s/T) - p), zero when the student matches the teacher.
    loss.sum().backward()
    assert torch.allclose(student.grad, temperature * (student_t - targets).detach(), atol=1e-5)
    assert torch.allclose(distillation_loss(teacher, targets, t), torch.zeros(5), atol=1e-5)


def test_distillation_loss_is_the_cross_entropy_for_one_hot_rows_at_temperature_one():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 10), torch.randint(0, 10, (6,))
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    assert torch.allclose(distillation_loss(logits, one_hot, torch.ones(6)),
                          torch.nn.functional.cross_entropy(logits, labels, reduction="none"), atol=1e-5)
    # Per-row temperatures through the criterion: real rows at 1, replayed rows at T.
    model = LifelongVAE(hidden_dim=16).eval()
    x = torch.rand(6, 1, 28, 28)
    out = model(x)
    temperatures = torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    targets = torch.cat([one_hot[:3], (torch.randn(3, 10) / 2).softmax(-1)])
    bound = negative_joint_bound(out, x, targets, class_temperatures=temperatures)
    assert torch.allclose(bound.classification, distillation_loss(out.class_logits, targets, temperatures))
    criterion = JointBoundLoss(classification_weight=3.0)
    loss = criterion(out, targets, class_temperatures=temperatures)
    assert torch.allclose(loss, bound.negative_elbo.mean() + 3.0 * bound.classification.mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="soft targets"):
        distillation_loss(logits, labels, torch.ones(6))
    with pytest.raises(ValueError, match="positive"):
        distillation_loss(logits, one_hot, torch.zeros(6))
