"""LifelongVAE: shapes, gradients, sampling, discrete growth, bad input."""

import pytest
import torch

from avalanche_lvae import JointBoundLoss, LifelongVAE, LVAEOutput


def _batch(shape, n=6):
    return torch.rand(n, *shape), torch.randint(0, 10, (n,))


@pytest.mark.parametrize("classifier_input", ["features", "latent"])
@pytest.mark.parametrize("arch", ["dense", "conv"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_forward_backward_shapes_and_gradients_reach_every_parameter(arch, shape, classifier_input):
    torch.manual_seed(0)
    model = LifelongVAE(input_shape=shape, arch=arch, discrete_dim=3, hidden_dim=64, classifier_input=classifier_input)
    x, y = _batch(shape)
    out = model(x)
    assert isinstance(out, LVAEOutput)
    assert out.class_logits.shape == (6, 10)
    assert out.reconstruction_logits.shape == (6, *shape)
    assert out.continuous_loc.shape == out.continuous_scale.shape == (6, 14)
    assert out.discrete_logits.shape == out.z_discrete.shape == (6, 3)
    assert (out.continuous_scale > 0).all()
    JointBoundLoss()(out, y).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_eval_classification_is_deterministic_and_uses_the_posterior_mode():
    torch.manual_seed(0)
    model = LifelongVAE(hidden_dim=32, discrete_dim=2, classifier_input="latent").eval()
    x, _ = _batch((1, 28, 28))
    a, b = model(x, sample=True), model(x, sample=True)
    assert torch.equal(a.class_logits, b.class_logits)
    assert not torch.equal(a.z_continuous, b.z_continuous)  # reconstruction path is sampled
    mode = model(x, sample=False)
    assert torch.equal(mode.z_continuous, mode.continuous_loc)
    assert torch.equal(mode.z_discrete.argmax(-1), mode.discrete_logits.argmax(-1))


def test_features_classifier_reads_the_encoder_features_in_training_and_at_test():
    torch.manual_seed(0)
    model = LifelongVAE(hidden_dim=32, discrete_dim=2)
    assert model.classifier_input == "features" and model.classifier_projection is None
    x, _ = _batch((1, 28, 28))
    for mode in (model.train(), model.eval()):
        out = mode(x)
        expected = model.classifier(model.encoder(x))
        assert torch.allclose(out.class_logits, expected, atol=1e-6)
    # The classifier does not depend on the latent sample, and encode_and_classify agrees with forward.
    assert torch.equal(model(x, sample=True).class_logits, model(x, sample=False).class_logits)
    loc, scale, discrete_logits, class_logits = model.encode_and_classify(x)
    out = model(x)
    assert torch.equal(class_logits, out.class_logits) and torch.equal(loc, out.continuous_loc)
    with pytest.raises(ValueError, match='classifier_input="latent"'):
        model.classify(torch.zeros(2, 14), torch.ones(2, 2))
    latent = LifelongVAE(hidden_dim=32, discrete_dim=2, classifier_input="latent").eval()
    *_, latent_logits = latent.encode_and_classify(x)
    assert torch.equal(latent_logits, latent(x).class_logits)


def test_training_draws_relaxed_discrete_samples():
    model = LifelongVAE(hidden_dim=32, discrete_dim=4).train()
    out = model(_batch((1, 28, 28))[0])
    assert torch.allclose(out.z_discrete.sum(-1), torch.ones(6), atol=1e-5)
    assert ((out.z_discrete > 0) & (out.z_discrete < 1)).any()  # soft, not one-hot


@pytest.mark.parametrize("component", [0, 2, 4])
def test_sample_with_component_returns_that_component_for_every_row(component):
    model = LifelongVAE(hidden_dim=32, discrete_dim=5).eval()
    images, components = model.sample(7, component=component)
    assert images.shape == (7, 1, 28, 28)
    assert (images >= 0).all() and (images <= 1).all()
    assert components.tolist() == [component] * 7


def test_sample_without_component_spreads_rows_evenly():
    model = LifelongVAE(hidden_dim=32, discrete_dim=4).eval()
    _, components = model.sample(12)
    assert torch.bincount(components, minlength=4).tolist() == [3, 3, 3, 3]
    # Only the first num_components values (the replay of the distributions seen so far).
    z_c, z_d, components = model.sample_latent(12, num_components=3)
    assert torch.bincount(components, minlength=4).tolist() == [4, 4, 4, 0]
    assert torch.equal(z_d.argmax(-1), components) and z_c.shape == (12, 14)
    with pytest.raises(ValueError, match="at most discrete_dim=4"):
        model.sample_latent(12, num_components=5)
    with pytest.raises(ValueError, match="either component"):
        model.sample_latent(12, component=1, num_components=2)


@pytest.mark.parametrize("n,k", [(10, 3), (128, 9), (7, 7), (5, 1)])
def test_equal_share_components_are_contiguous_and_differ_by_at_most_one_row(n, k):
    components = LifelongVAE.equal_share_components(n, k)
    counts = torch.bincount(components, minlength=k)
    assert components.tolist() == sorted(components.tolist()) and counts.sum() == n
    assert counts.max() - counts.min() <= 1
    _, _, sampled = LifelongVAE(hidden_dim=32, discrete_dim=k).sample_latent(n, num_components=k)
    assert torch.equal(sampled, components)


@pytest.mark.parametrize("classifier_input", ["features", "latent"])
def test_grow_discrete_keeps_every_other_weight_and_output(classifier_input):
    torch.manual_seed(0)
    model = LifelongVAE(hidden_dim=32, discrete_dim=2, classifier_input=classifier_input).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, _ = _batch((1, 28, 28))
    features_before = model.encoder(x)
    model.grow_discrete()
    assert model.discrete_dim == 3
    after = model.state_dict()
    grown = {"discrete_head.weight", "discrete_head.bias", "decoder_projection.discrete.weight",
             "classifier_projection.discrete.weight", "component_loc", "component_scale_tril"}
    grown &= set(before)
    assert set(before) == set(after)
    for name in before:
        if name in grown:
            assert after[name].shape[0 if "head" in name or "component" in name else 1] == 3
        else:
            assert torch.equal(before[name], after[name]), name
    # Everything that does not read or write z_d is bit-identical.
    assert torch.equal(model.encoder(x), features_before)
    z_c = torch.randn(4, 14)
    old_model = LifelongVAE(hidden_dim=32, discrete_dim=2, classifier_input=classifier_input).eval()
    old_model.load_state_dict(before)
    assert torch.equal(model.decoder(model.decoder_projection.continuous(z_c)),
                       old_model.decoder(old_model.decoder_projection.continuous(z_c)))
    model.grow_discrete(k=2)
    assert model.discrete_dim == 5 and model(x).discrete_logits.shape == (6, 5)


def test_temperature_is_annealed_on_the_authors_schedule():
    model = LifelongVAE(hidden_dim=16, temperature_anneal_rate=0.01, temperature_anneal_interval=10)
    for _ in range(9):
        assert model.step_temperature() == 1.0
    assert model.step_temperature() == pytest.approx(torch.exp(torch.tensor(-0.1)).item())
    for _ in range(1000):
        model.step_temperature()
    assert float(model.temperature) == 0.5  # floor


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "x, message",
    [
        (torch.rand(4, 1, 28, 28) * 255, "divide by 255"),
        ((torch.rand(4, 1, 28, 28) - 0.1307) / 0.3081, "ToTensor"),
        (torch.rand(4, 1, 32, 32), "wrong image shape"),
        (torch.rand(4, 784), "wrong image shape"),
        (torch.full((4, 1, 28, 28), float("nan")), "NaN"),
        (torch.full((4, 1, 28, 28), float("inf")), "NaN or infinite"),
        (torch.randint(0, 2, (4, 1, 28, 28)), "dtype"),
        (torch.rand(0, 1, 28, 28), "empty batch"),
    ],
)
def test_forward_rejects_bad_images_with_a_clear_message(x, message):
    with pytest.raises(ValueError, match=message):
        LifelongVAE(hidden_dim=16)(x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"continuous_dim": 0}, "continuous_dim"),
        ({"discrete_dim": -1}, "discrete_dim"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"num_classes": 0}, "num_classes"),
        ({"initial_temperature": 0.0}, "initial_temperature"),
        ({"min_temperature": -1.0}, "min_temperature"),
        ({"initial_temperature": 0.4, "min_temperature": 0.5}, "must not exceed"),
        ({"arch": "resnet"}, "arch"),
        ({"classifier_input": "pixels"}, "classifier_input"),
        ({"input_shape": (28, 28)}, "input_shape"),
        ({"normalization": "none"}, "normalization must be one of"),
        ({"arch": "conv", "normalization": "layer"}, "applies to arch='dense'"),
        ({"arch": "conv", "input_shape": (1, 64, 64)}, "32x32"),
    ],
)
def test_constructor_rejects_bad_sizes_and_temperatures(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LifelongVAE(**kwargs)


def test_sample_rejects_bad_component_and_size():
    model = LifelongVAE(hidden_dim=16, discrete_dim=2)
    with pytest.raises(ValueError, match="component"):
        model.sample(3, component=2)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        model.sample(0)


def test_generation_prior_is_standard_normal_until_a_component_prior_is_set():
    model = LifelongVAE(hidden_dim=16, discrete_dim=2).eval()
    torch.manual_seed(3)
    z_c, _, _ = model.sample_latent(64, component=1)
    torch.manual_seed(3)
    assert torch.equal(z_c, torch.randn(64, 14))  # bit for bit the papers' N(0, I)
    loc = torch.full((14,), 3.0)
    model.set_component_prior(1, loc, 0.25 * torch.eye(14))
    torch.manual_seed(0)
    fitted, _, _ = model.sample_latent(4000, component=1)
    standard, _, _ = model.sample_latent(4000, component=0)
    assert fitted.mean(0).sub(3.0).abs().max() < 0.05 and fitted.std(0).sub(0.5).abs().max() < 0.03
    assert standard.mean(0).abs().max() < 0.1 and standard.std(0).sub(1.0).abs().max() < 0.06
    # Growing keeps the fitted prior and gives the new component N(0, I).
    model.grow_discrete()
    assert torch.equal(model.component_loc[1], loc)
    assert torch.equal(model.component_loc[2], torch.zeros(14))
    assert torch.equal(model.component_scale_tril[2], torch.eye(14))


def test_set_component_prior_rejects_bad_input():
    model = LifelongVAE(hidden_dim=16, discrete_dim=2)
    with pytest.raises(ValueError, match="component must be"):
        model.set_component_prior(2, torch.zeros(14), torch.eye(14))
    with pytest.raises(ValueError, match="shape"):
        model.set_component_prior(0, torch.zeros(3), torch.eye(14))
    with pytest.raises(ValueError, match="positive definite"):
        model.set_component_prior(0, torch.zeros(14), torch.zeros(14, 14))


def test_fast_elu_equals_torch_elu_in_value_and_gradient():
    from avalanche_lvae.models.activations import ELU

    x = torch.cat([torch.linspace(-30, 30, 2001), torch.tensor([0.0, -1e-8, 1e-8, float("-inf")])])
    x.requires_grad_(True)
    reference = x.detach().clone().requires_grad_(True)
    y, y_ref = ELU()(x), torch.nn.functional.elu(reference)
    assert torch.allclose(y, y_ref, atol=1e-7, rtol=0)
    y.sum().backward()
    y_ref.sum().backward()
    assert torch.allclose(x.grad, reference.grad, atol=1e-6, rtol=0)
    assert torch.autograd.gradcheck(ELU(), (torch.randn(16, 5, dtype=torch.float64, requires_grad=True),))


def test_conv_width_scales_the_channels_of_eq14():
    def channels(model, kind):
        return [m.out_channels for m in model.modules() if type(m) is kind]

    paper = LifelongVAE(arch="conv", hidden_dim=512)  # LGM App. 9.3, Eq. 14
    assert channels(paper.encoder, torch.nn.Conv2d) == [32, 64, 128, 256, 512, 512]
    assert channels(paper.decoder, torch.nn.ConvTranspose2d) == [256, 128, 64, 32, 32, 1]
    narrow = LifelongVAE(arch="conv", hidden_dim=512, conv_width=8)
    assert channels(narrow.encoder, torch.nn.Conv2d) == [8, 16, 32, 64, 128, 512]
    assert channels(narrow.decoder, torch.nn.ConvTranspose2d) == [64, 32, 16, 8, 8, 1]
    out = narrow(torch.rand(3, 1, 28, 28))
    assert out.reconstruction_logits.shape == (3, 1, 28, 28) and torch.isfinite(out.reconstruction_logits).all()
    with pytest.raises(ValueError, match="conv_width"):
        LifelongVAE(arch="conv", conv_width=0)


@pytest.mark.parametrize("classifier_input", ["features", "latent"])
def test_layer_normalization_keeps_no_running_statistics(classifier_input):
    # With BatchNorm a training pass moves the running statistics that evaluation uses; with LayerNorm the model
    # holds no such statistics, so training on one batch leaves its test-time function unchanged.
    x, _ = _batch((1, 28, 28), n=16)
    for normalization, norm_type in (("batch", torch.nn.BatchNorm1d), ("layer", torch.nn.LayerNorm)):
        torch.manual_seed(0)
        model = LifelongVAE(hidden_dim=32, discrete_dim=2, classifier_input=classifier_input,
                            normalization=normalization)
        norms = [type(m) for m in model.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.LayerNorm))]
        assert norms and all(kind is norm_type for kind in norms)
        before = model.eval()(x).class_logits
        with torch.no_grad():
            model.train()(x.square())  # a batch with other statistics
        after = model.eval()(x).class_logits
        assert torch.equal(before, after) == (normalization != "batch")
