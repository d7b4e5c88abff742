"""report/figures.py: each figure's structure and the pixels it shows."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from mnist_vae.data.geometry import SIDE
from mnist_vae.params import ModelParams
from mnist_vae.report import figures
from mnist_vae.report.canvas import PAD
from mnist_vae.vae import samplers
from mnist_vae.vae.latents import linear_path
from mnist_vae.vae.model import VAE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
S = SIDE + PAD  # one tile and its pad


def make_vae(latent_dim):
    torch.manual_seed(latent_dim)
    return VAE(ModelParams(hidden_dims=[32], latent_dim=latent_dim)).eval()


@pytest.fixture(scope="module")
def vae2():
    return make_vae(2)


@pytest.fixture(scope="module")
def vae5():
    return make_vae(5)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(200, 784, generator=g).numpy(), torch.randint(0, 10, (200,), generator=g).numpy()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def shown(ax):
    """The one image array an axes shows."""
    assert len(ax.images) == 1
    return np.asarray(ax.images[0].get_array())


def cell(canvas, i, j, x0=0):
    """The 784 pixels of the tile in row i, column j (columns start at pixel x0)."""
    return torch.from_numpy(canvas[i * S:i * S + 28, x0 + j * S:x0 + j * S + 28].reshape(784).copy())


def decoded_means(model, x):
    with torch.no_grad():
        return model.mean(model.decode(model.encode(torch.as_tensor(x))[0]))


def test_samples_grid_shows_the_model_samples(vae2):
    fig = figures.samples_grid(vae2, prior(vae2), 4, gen())
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_title() == "Samples from the prior z ~ N(0, I)"
    canvas = shown(ax)
    assert canvas.shape == (4 * 28 + 3 * 2, 4 * 28 + 3 * 2)
    expected = vae2.sample(16, gen())
    torch.testing.assert_close(cell(canvas, 0, 0), expected[0])
    torch.testing.assert_close(cell(canvas, 3, 2), expected[14])
    np.testing.assert_array_equal(canvas, shown(figures.samples_grid(vae2, prior(vae2), 4, gen()).axes[0]))


def prior(model):
    return samplers.get(model, None, samplers.PRIOR)


def mixture(model):
    """A one-component fitted sampler far from the prior: N((3, -3), 0.01 I)."""
    fitted = samplers.Fitted({"fit_on": "mu", "samplers": {"gmm": {
        "kind": "gmm", "weights": torch.ones(1, dtype=torch.float64),
        "means": torch.tensor([[3.0, -3.0]], dtype=torch.float64),
        "scale_tril": 0.1 * torch.eye(2, dtype=torch.float64)[None]}}})
    return samplers.get(model, fitted, "gmm")


def test_a_samplers_grid_and_the_side_by_side_draw_from_each_sampler_on_one_seed(vae2):
    model, gmm = vae2, mixture(vae2)
    fig = figures.samples_grid(model, gmm, 3, gen())
    assert fig.axes[0].get_title() == "Samples from the fitted sampler 'gmm'"
    z = gmm.draw(9, gen())
    torch.testing.assert_close(cell(shown(fig.axes[0]), 2, 1), model.mean(model.decode(z))[7].detach())
    both = figures.samplers_side_by_side(model, [(prior(model), 1.0), (gmm, 1.0)], 3, 5)
    left, right = (shown(ax) for ax in both.axes)
    assert [ax.get_title() for ax in both.axes] == ["the prior z ~ N(0, I)", "the fitted sampler 'gmm'"]
    np.testing.assert_array_equal(left, shown(figures.samples_grid(model, prior(model), 3, gen(5)).axes[0]))
    np.testing.assert_array_equal(right, shown(figures.samples_grid(model, gmm, 3, gen(5)).axes[0]))
    assert not np.array_equal(left, right)
    # at another temperature: the title says it, and the draws are the sampler's at that temperature
    cold = figures.samples_grid(model, gmm, 3, gen(), temperature=0.5)
    assert cold.axes[0].get_title() == "Samples from the fitted sampler 'gmm', T = 0.5"
    z = gmm.draw(9, gen(), 0.5)
    torch.testing.assert_close(cell(shown(cold.axes[0]), 2, 1), model.mean(model.decode(z))[7].detach())
    side = figures.samplers_side_by_side(model, [(prior(model), 1.0), (gmm, 0.5)], 3, 5)
    assert side.axes[1].get_title() == "the fitted sampler 'gmm', T = 0.5"
    np.testing.assert_array_equal(shown(side.axes[1]), shown(figures.samples_grid(model, gmm, 3, gen(5), 0.5).axes[0]))


def test_the_vampprior_figures_show_its_samples_and_its_pseudo_inputs():
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[32], latent_dim=3, prior="vamp", vamp_components=30)).eval()
    with torch.no_grad():
        model.pseudo_inputs[3] = torch.linspace(-1, 2, 784)  # through hardtanh: clipped to [0, 1]
    fig = figures.samples_grid(model, prior(model), 3, gen())
    assert fig.axes[0].get_title() == "Samples from the prior z ~ VampPrior (K = 30)"
    torch.testing.assert_close(cell(shown(fig.axes[0]), 1, 2), model.sample(9, gen())[5])
    fig = figures.pseudo_inputs(model, columns=8)
    assert fig.axes[0].get_title() == "The VampPrior's pseudo-inputs (30 of 30)"
    canvas = shown(fig.axes[0])
    assert canvas.shape == (4 * 28 + 3 * 2, 8 * 28 + 7 * 2)  # 30 images in 4 rows of 8, two blank
    torch.testing.assert_close(cell(canvas, 0, 3), torch.linspace(-1, 2, 784).clamp(0, 1))
    torch.testing.assert_close(cell(canvas, 3, 5), model.pseudo_input_images()[29].detach())
    assert torch.isnan(cell(canvas, 3, 6)).all()
    assert shown(figures.pseudo_inputs(model, columns=5, max_images=10).axes[0]).shape == (2 * 28 + 2, 5 * 28 + 4 * 2)


def test_interpolation_paths_start_and_end_at_the_test_digits(vae5, data):
    x = data[0]
    paths = figures.interpolation_paths(vae5, x, rows=5, steps=4, generator=gen())
    assert paths.prior.shape == (3, 4, 784) and paths.data.shape == (2, 4, 784)
    assert paths.pairs.shape == (2, 2) and len(set(paths.pairs.flatten().tolist())) == 4
    torch.testing.assert_close(paths.originals, torch.from_numpy(x[paths.pairs.numpy()]))
    torch.testing.assert_close(paths.data[:, 0], decoded_means(vae5, x[paths.pairs[:, 0].numpy()]))
    torch.testing.assert_close(paths.data[:, -1], decoded_means(vae5, x[paths.pairs[:, 1].numpy()]))
    # the prior rows decode the straight path between two N(0, I) draws, drawn first from the generator
    g = gen()
    z1, z2 = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    with torch.no_grad():
        expected = vae5.mean(vae5.decode(linear_path(z1, z2, 4)))
    torch.testing.assert_close(paths.prior, expected)


def test_interpolations_figure_layout(vae5, data):
    x = torch.from_numpy(data[0])  # torch input works as well as numpy
    fig = figures.interpolations(vae5, x, rows=3, steps=4, generator=gen())
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_title()
    canvas = shown(ax)
    x0 = 28 + figures.GAP  # the path starts after the left original and the gap
    assert canvas.shape == (3 * S - 2, 2 * x0 + 4 * S - 2)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["prior", "prior", "test digits"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["original", "original"]
    top = [t.get_text() for t in ax.child_axes[0].get_xticklabels()]
    assert top == ["α=0.00", "α=0.33", "α=0.67", "α=1.00"]
    paths = figures.interpolation_paths(vae5, x, rows=3, steps=4, generator=gen())
    torch.testing.assert_close(cell(canvas, 2, 0, x0), paths.data[0, 0])  # alpha = 0: decoded mu(x_a)
    torch.testing.assert_close(cell(canvas, 2, 3, x0), paths.data[0, 3])
    torch.testing.assert_close(cell(canvas, 2, 0), paths.originals[0, 0])  # original x_a, left
    torch.testing.assert_close(cell(canvas, 2, 0, canvas.shape[1] - 28), paths.originals[0, 1])  # x_b, right
    torch.testing.assert_close(cell(canvas, 0, 1, x0), paths.prior[0, 1])
    assert np.isnan(canvas[:28, :28]).all()  # no original beside a prior row


def test_every_decoded_figure_works_with_the_conv_decoder(data):
    # the conv decoder takes (n, d) only; the interpolation paths are (rows, steps, d)
    torch.manual_seed(0)
    conv = VAE(ModelParams(architecture="conv", conv_channels=[4, 8], latent_dim=2)).eval()
    paths = figures.interpolation_paths(conv, data[0], rows=4, steps=5, generator=gen())
    assert paths.prior.shape == (2, 5, 784) and paths.data.shape == (2, 5, 784)
    for endpoint in (0, -1):  # the ends of the data rows decode the test digits' codes themselves
        mu = conv.encode(paths.originals[:, endpoint])[0]
        torch.testing.assert_close(paths.data[:, endpoint], conv.mean(conv.decode(mu)))
    for fig in (figures.interpolations(conv, data[0], 4, 5, gen()), figures.reconstructions(conv, data[0], 3),
                figures.samples_grid(conv, prior(conv), 3, gen()), figures.manifold(conv, 4)):
        assert isinstance(fig, Figure)


def test_interpolations_with_only_prior_rows(vae5, data):
    ax = figures.interpolations(vae5, data[0], rows=1, steps=3, generator=gen()).axes[0]
    assert shown(ax).shape == (28, 3 * S - 2)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["prior"]
    with pytest.raises(ValueError):
        figures.interpolations(vae5, data[0][:3], rows=4, steps=3, generator=gen())  # needs 4 test digits


def test_reconstructions(vae2, data):
    x = data[0]
    ax = figures.reconstructions(vae2, x, 5).axes[0]
    assert "reconstruction" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["original", "reconstruction"]
    canvas = shown(ax)
    assert canvas.shape == (2 * S - 2, 5 * S - 2)
    recon = decoded_means(vae2, x[:5])
    for j in (0, 4):
        torch.testing.assert_close(cell(canvas, 0, j), torch.from_numpy(x[j]))
        torch.testing.assert_close(cell(canvas, 1, j), recon[j])


def history_rows(n):
    return [{"epoch": e, "train_total": 200.0 - e, "train_rec": 180.0 - e, "train_kl": 20.0,
             "test_total": 201.0 - e, "test_rec": 181.0 - e, "test_kl": 20.5, "epoch_time": 1.0}
            for e in range(1, n + 1)]


def test_training_curves():
    fig = figures.training_curves(history_rows(5))
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == [title for _, title in figures.CURVES]
    for ax, key in zip(fig.axes, ("total", "rec", "kl")):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "nats per example"
        assert [line.get_label() for line in ax.get_lines()] == ["train", "test"]
        assert ax.get_legend() is not None
        np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [row[f"train_{key}"] for row in history_rows(5)])
    as_csv = [{k: str(v) for k, v in row.items()} for row in history_rows(2)]  # csv.DictReader rows
    np.testing.assert_allclose(figures.training_curves(as_csv).axes[2].get_lines()[1].get_ydata(), [20.5, 20.5])


def test_training_curves_under_iwae_draw_the_bound_apart_from_the_elbo():
    rows = [dict(row, train_neg_iwae_bound=150.0 - row["epoch"], test_neg_iwae_bound=152.0 - row["epoch"])
            for row in history_rows(3)]
    fig = figures.training_curves(rows)
    assert [ax.get_title() for ax in fig.axes] == [title for _, title in figures.CURVES] + [figures.IWAE_CURVE[1]]
    total, bound = fig.axes[0], fig.axes[3]
    # the ELBO panel holds the ELBO of both splits, the bound panel the bound of both, never mixed
    np.testing.assert_allclose(total.get_lines()[0].get_ydata(), [199.0, 198.0, 197.0])
    np.testing.assert_allclose(total.get_lines()[1].get_ydata(), [200.0, 199.0, 198.0])
    np.testing.assert_allclose(bound.get_lines()[0].get_ydata(), [149.0, 148.0, 147.0])
    np.testing.assert_allclose(bound.get_lines()[1].get_ydata(), [151.0, 150.0, 149.0])


def test_reparameterization(vae5, data):
    fig = figures.reparameterization(vae5, data[0], gen(), n=50)
    assert [ax.get_title() for ax in fig.axes] == [
        "Prior p(z) ~ N(0,1)", "Encoder Mean μ", "Encoder Std σ", "Samples z = μ + σε"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["z", "μ", "σ", "z"]
    assert all(ax.get_ylabel() == "Frequency" for ax in fig.axes)
    for ax in fig.axes:  # every panel holds one value per (digit, latent dimension)
        assert sum(p.get_height() for p in ax.patches) == 50 * 5
    with torch.no_grad():
        mu, logvar = vae5.encode(torch.from_numpy(data[0][:50]))
    sigma_counts, _ = np.histogram(torch.exp(0.5 * logvar).numpy().ravel(), bins=50)
    np.testing.assert_array_equal([p.get_height() for p in fig.axes[2].patches], sigma_counts)


def test_latent_space_plots_a_2d_latent_directly(vae2, data):
    x, y = data
    fig = figures.latent_space(vae2, x, y, 100)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the scatter and its digit colour bar
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z1", "z2") and ax.get_title()
    with torch.no_grad():
        mu = vae2.encode(torch.from_numpy(x[:100]))[0].numpy()
    points = ax.collections[0]
    np.testing.assert_allclose(points.get_offsets(), mu, rtol=1e-5)
    np.testing.assert_array_equal(points.get_array(), y[:100])


def test_latent_space_uses_pca_otherwise(vae5, data):
    x, y = data
    ax = figures.latent_space(vae5, x, y, 150).axes[0]
    assert ax.get_xlabel().startswith("PC 1 (") and ax.get_xlabel().endswith("% var)")
    assert ax.get_ylabel().startswith("PC 2 (")
    xy = np.asarray(ax.collections[0].get_offsets())
    assert xy.shape == (150, 2)
    np.testing.assert_allclose(xy.mean(0), 0, atol=1e-6)  # centred
    assert xy[:, 0].var() >= xy[:, 1].var()  # the first component explains the most
    assert abs(np.corrcoef(xy.T)[0, 1]) < 1e-6  # and they are uncorrelated


def test_manifold(vae2, vae5):
    with pytest.raises(ValueError, match="latent_dim 2"):
        figures.manifold(vae5, 5)
    ax = figures.manifold(vae2, 3, span=3.0).axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z1", "z2") and "3×3" in ax.get_title()
    canvas = shown(ax)
    assert canvas.shape == (84, 84)  # no pad: the image spans [-3, 3]^2 exactly
    assert tuple(ax.images[0].get_extent()) == (-3.0, 3.0, -3.0, 3.0)
    with torch.no_grad():  # cell centres -2, 0, 2; top-left is z = (-2, 2), bottom-right (2, -2)
        corners = vae2.mean(vae2.decode(torch.tensor([[-2.0, 2.0], [2.0, -2.0]])))
    torch.testing.assert_close(torch.from_numpy(canvas[:28, :28].reshape(784).copy()), corners[0])
    torch.testing.assert_close(torch.from_numpy(canvas[56:, 56:].reshape(784).copy()), corners[1])


def test_counts_below_one_are_refused(vae2, data):
    for call in (lambda: figures.samples_grid(vae2, prior(vae2), 0, gen()), lambda: figures.reconstructions(vae2, data[0], 0),
                 lambda: figures.latent_space(vae2, *data, 0), lambda: figures.manifold(vae2, 0)):
        with pytest.raises(ValueError):
            call()


def test_class_rows_put_each_digit_in_its_row_in_order_and_pad_with_blanks():
    images = np.arange(6, dtype=np.float32)[:, None] * np.ones((6, 784), dtype=np.float32)
    predicted = np.array([3, 1, 3, 3, 1, 9])
    rows = figures.class_rows(images, predicted, per_class=2)
    assert rows.shape == (10, 2, 784)
    assert rows[3, 0, 0] == 0 and rows[3, 1, 0] == 2  # the first two 3s, in draw order (the third is left out)
    assert rows[1, 0, 0] == 1 and rows[1, 1, 0] == 4
    assert rows[9, 0, 0] == 5 and np.isnan(rows[9, 1]).all()
    assert np.isnan(rows[0]).all()  # no 0 drawn: a blank row


def test_samples_by_class_shows_one_row_per_digit_with_its_share():
    g = np.random.default_rng(0)
    images = g.random((40, 784)).astype(np.float32)
    predicted = np.repeat(np.arange(10), 4)
    predicted[-4:] = 0  # no 9s: 8 zeros
    fig = figures.samples_by_class(images, predicted, per_class=5)
    ax = fig.axes[0]
    canvas = shown(ax)
    assert canvas.shape == (10 * 28 + 9 * 2, 5 * 28 + 4 * 2)
    torch.testing.assert_close(cell(canvas, 0, 4), torch.from_numpy(images[36]))  # the fifth 0 drawn
    torch.testing.assert_close(cell(canvas, 2, 0), torch.from_numpy(images[8]))
    assert cell(canvas, 9, 0).isnan().all() and cell(canvas, 1, 4).isnan().all()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "0 (20%)" and labels[9] == "9 (0%)"


def test_class_histogram_draws_the_fractions_and_the_uniform_line():
    hist = [0.2, 0.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    fig = figures.class_histogram(hist, 2.16, 1000)
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == hist
    assert ax.lines[0].get_ydata()[0] == pytest.approx(0.1)
    assert "1000 prior samples" in ax.get_title() and "2.160 nats" in ax.get_title()
