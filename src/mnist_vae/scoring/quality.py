"""Sample and representation quality of a VAE, measured with the digit classifier (classifier.py).

These numbers compare across likelihoods, objectives and beta, where the ELBO does not:

- **FID** (Fréchet distance between Gaussian fits of the classifier's penultimate features, Heusel et
  al. 2017) of prior samples and of reconstructions against the test digits, with the training-vs-test
  value as the floor;
- **precision and recall** with k-nearest-neighbour manifolds (Kynkäänniemi et al. 2019);
- **class coverage** of the samples (histogram of predicted digits, entropy, KL from uniform, mean
  classifier confidence);
- **reconstruction accuracy** (the classifier's accuracy on reconstructed test digits);
- **the decoder's floor**: FID, precision and recall of the decoded codes mu(x) of the training digits the
  fitted samplers never saw (samplers.held_out), what a perfect sampler of these codes would score; each
  sampler's FID above it is its `floor_gap_fid`;
- **the best sampler**: the prior or the fitted sampler with the lowest sample FID (samplers/choice.py);
- **linear probe**: multinomial logistic regression from mu(x) to the digit, fitted on training
  encodings, scored on test encodings.

Every image given to the classifier is on its pixel / 255 scale in [0, 1]: real digits as raw uint8
pixels / 255, and the VAE's outputs (decoder means E[x|z], on the scale of the VAE's training data)
mapped back to it by `to_pixel_scale`, the inverse of the dequantization's mean.
Feature arithmetic is float64 numpy/torch; nothing here draws random numbers except through the
generator passed in, so the same inputs give the same numbers.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from mnist_vae.data.dequantize import to_pixel_scale
from mnist_vae.errors import UserError
from mnist_vae.scoring import classifier as clf
from mnist_vae.vae import samplers
from mnist_vae.vae.evaluation import encode_all
from mnist_vae.vae.samplers import choice

N_CLASSES = clf.N_CLASSES


# ---------------------------------------------------------------- Fréchet distance


def gaussian_fit(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, d) features, float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N >= 2, d) features, got shape {f.shape}")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix; eigenvalues below 0
    (rounding, or rank deficiency) are clipped to 0, so the result is real."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 sigma2)^(1/2)) = tr((S1^½ sigma2 S1^½)^(1/2)), with S1^½ sigma2 S1^½ symmetric PSD.

    sigma1 sigma2 and S1^½ sigma2 S1^½ have the same eigenvalues (AB and BA do), so this is the trace of
    the FID formula; using a symmetric eigendecomposition instead of a general matrix square root keeps
    it real and stable when a covariance is singular (fewer samples than features, dead units).
    """
    r = _psd_sqrt(sigma1)
    m = r @ sigma2 @ r
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||² + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)): the squared 2-Wasserstein distance
    between N(mu1, sigma1) and N(mu2, sigma2); clipped at 0 against rounding."""
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(float(value), 0.0)


def fid(features1, features2) -> float:
    """FID between two (N, d) feature sets."""
    return frechet_distance(*gaussian_fit(features1), *gaussian_fit(features2))


# ---------------------------------------------------------------- precision and recall


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float64)


def _sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of a and b, clipped at 0."""
    d = (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None]
    return d.clamp_min_(0)


def knn_radii(features, k: int, block: int = 1000) -> torch.Tensor:
    """Squared distance from each row to its k-th nearest other row (the radius of its k-NN ball).

    Distances are computed `block` rows at a time, so memory is block x N, not N x N.
    """
    f = _as_tensor(features)
    if len(f) <= k:
        raise UserError(f"k-NN manifolds need more than k = {k} points, got {len(f)}")
    radii = []
    for start in range(0, len(f), block):
        d = _sq_distances(f[start:start + block], f)
        # the k+1 smallest include the point itself (distance 0)
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def in_manifold(queries, support, radii: torch.Tensor, block: int = 1000) -> torch.Tensor:
    """For each query, whether it lies in the union of the balls of `support` with squared radii `radii`."""
    q, s = _as_tensor(queries), _as_tensor(support)
    inside = [(_sq_distances(q[i:i + block], s) <= radii[None]).any(1) for i in range(0, len(q), block)]
    return torch.cat(inside)


def precision_recall(real, fake, k: int = 3, block: int = 1000) -> dict[str, float]:
    """Kynkäänniemi et al. 2019: precision = fraction of fake points inside the real k-NN manifold,
    recall = fraction of real points inside the fake k-NN manifold."""
    precision = in_manifold(fake, real, knn_radii(real, k, block), block).double().mean()
    recall = in_manifold(real, fake, knn_radii(fake, k, block), block).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


# ---------------------------------------------------------------- class coverage


def class_coverage(probs: torch.Tensor) -> dict:
    """Predicted-digit histogram of samples (fractions), its entropy and KL from uniform (nats), and the
    mean of the classifier's top probability."""
    probs = torch.as_tensor(probs, dtype=torch.float64)
    counts = torch.bincount(probs.argmax(1), minlength=N_CLASSES).double()
    hist = counts / counts.sum()
    nz = hist[hist > 0]
    entropy = float(-(nz * nz.log()).sum()) + 0.0  # + 0.0: a one-class histogram gives 0, not -0
    return {
        "histogram": [round(v, 6) for v in hist.tolist()],
        "entropy": entropy,
        "kl_from_uniform": math.log(N_CLASSES) - entropy,
        "mean_confidence": float(probs.max(1).values.mean()),
    }


# ---------------------------------------------------------------- linear probe


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-8)
    return (train - mean) / std, (test - mean) / std


def linear_probe(z_train, y_train, z_test, y_test, l2: float = 1e-4, max_iter: int = 200) -> dict[str, float]:
    """Multinomial logistic regression from latents to digits: full-batch L-BFGS (strong Wolfe line search)
    on the mean cross-entropy + l2/2 ||W||², from zero weights, on standardised float64 inputs. Being
    full-batch from a fixed start it draws nothing at random: the same inputs give the same accuracy."""
    z_tr, z_te = _standardise(_as_tensor(z_train), _as_tensor(z_test))
    y_tr, y_te = torch.as_tensor(y_train).long(), torch.as_tensor(y_test).long()
    n_classes = max(N_CLASSES, int(y_tr.max()) + 1)
    w = torch.zeros(z_tr.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z_tr @ w + b, y_tr) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        train_acc = ((z_tr @ w + b).argmax(1) == y_tr).double().mean()
        test_acc = ((z_te @ w + b).argmax(1) == y_te).double().mean()
    return {"train_accuracy": float(train_acc), "test_accuracy": float(test_acc)}


# ---------------------------------------------------------------- all of it for evaluate


@torch.no_grad()
def reconstruct(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Decoder means at the posterior means: E[x | z = mu(x)], as (N, 784) images on the CPU."""
    model.eval()
    return torch.cat([model.mean(model.decode(model.encode(xb)[0])).cpu().float() for xb in x.split(batch_size)])


def reference(classifier, train_pixels: np.ndarray, f_test: torch.Tensor, p) -> dict[str, float]:
    """The floor: real training digits (the first n_reference) against the test digits' features f_test."""
    f_train, _ = clf.predict(classifier, clf.scale_pixels(train_pixels[: p.n_reference]))
    return {"fid": fid(f_train, f_test), **precision_recall(f_test, f_train, p.k, p.block),
            "n_train": len(f_train), "n_test": len(f_test)}


@torch.no_grad()
def generate(model, sampler: samplers.Sampler, n: int, mode: str, generator: torch.Generator,
             temperature: float = 1.0) -> torch.Tensor:
    """n samples as classifier inputs: decoder means of z drawn from `sampler` (samplers.get) at `temperature`,
    on the pixel / 255 scale."""
    z = sampler.draw(n, generator, temperature)
    return to_pixel_scale(model.mean(model.decode(z)).cpu().float(), mode)


def sample_quality(classifier, images: torch.Tensor, f_test: torch.Tensor, p) -> tuple[dict, dict]:
    """FID, precision and recall of generated images against the test features, and their class coverage."""
    f_samples, p_samples = clf.predict(classifier, images)
    scores = {"fid": fid(f_samples, f_test), **precision_recall(f_test, f_samples, p.k, p.block), "n": len(images)}
    return scores, class_coverage(p_samples)


def floor(model, classifier, x_held_out: torch.Tensor, f_test: torch.Tensor, mode: str, p) -> dict:
    """The decoder's floor: the decoded mu(x) of training digits no sampler was fitted to, scored as samples."""
    images = to_pixel_scale(reconstruct(model, x_held_out), mode)
    return sample_quality(classifier, images, f_test, p)[0]


def evaluate(model, fitted: Optional[samplers.Fitted], classifier, train: dict, test: dict,
             raw: dict[str, np.ndarray], mode: str, p, generator: torch.Generator, sampler_seed: int = 0,
             temperature: float = 1.0, x_held_out: Optional[torch.Tensor] = None) -> dict:
    """Everything under `quality` in metrics/eval.json.

    train, test: the VAE's inputs (data/processed: tensors x (N, 784) on the model's device, labels y);
    raw: data/raw/mnist.npz's uint8 x_train and x_test, the real digits as the classifier sees them;
    mode: the dequantization the VAE was trained on (for `to_pixel_scale`).
    The prior's samples come from `generator`; each of the model's `fitted` samplers is scored the same
    way under `samplers.<name>`, its draws at `temperature` from a generator seeded with `sampler_seed`; with
    `x_held_out` (the training digits the fit held out: samplers.held_out) the decoder's `floor` is scored on
    them, and each sampler's FID above it.
    """
    y_test = torch.as_tensor(test["y"]).long()
    f_test, _ = clf.predict(classifier, clf.scale_pixels(raw["x_test"]))
    if len(f_test) != len(y_test):
        raise UserError(f"{len(y_test)} processed test digits but {len(f_test)} raw ones: the processed data are "
                        "not from these raw digits")

    def scored(name: str, g: torch.Generator, t: float) -> dict:
        images = generate(model, samplers.get(model, fitted, name), p.n_samples, mode, g, t)
        return dict(zip(("samples", "class_coverage"), sample_quality(classifier, images, f_test, p)))

    prior = scored(samplers.PRIOR, generator, 1.0)
    f_recon, p_recon = clf.predict(classifier, to_pixel_scale(reconstruct(model, test["x"]), mode))

    n_probe = p.probe_examples or len(train["x"])
    mu_train, _ = encode_all(model, train["x"][:n_probe])
    mu_test, _ = encode_all(model, test["x"])
    out = {
        "samples": prior["samples"],
        "reconstructions": {"fid": fid(f_recon, f_test),
                            "accuracy": float((p_recon.argmax(1) == y_test).double().mean())},
        "reference": reference(classifier, raw["x_train"], f_test, p),
        "class_coverage": prior["class_coverage"],
        "probe": {**linear_probe(mu_train.cpu(), train["y"][:n_probe], mu_test.cpu(), y_test,
                                 p.probe_l2, p.probe_max_iter), "n_train": n_probe},
        "k": p.k, "n_test": len(f_test),
        "samplers": {name: {**scored(name, torch.Generator().manual_seed(sampler_seed), temperature),
                            "temperature": temperature} for name in (fitted.names if fitted else [])},
    }
    if x_held_out is not None:
        out["floor"] = floor(model, classifier, x_held_out, f_test, mode, p)
        for scores in out["samplers"].values():
            scores["floor_gap_fid"] = scores["samples"]["fid"] - out["floor"]["fid"]
    return out


def sampler_fids(q: dict) -> tuple[dict[str, float], dict[str, float]]:
    """The sample FID and the temperature of every sampler scored in the `quality` block q, prior first."""
    fids = {samplers.PRIOR: q["samples"]["fid"], **{n: s["samples"]["fid"] for n, s in q["samplers"].items()}}
    return fids, {samplers.PRIOR: 1.0, **{n: s["temperature"] for n, s in q["samplers"].items()}}


def best(q: dict) -> dict:
    """`quality.best` of metrics/eval.json: the sampler with the lowest sample FID in the `quality` block q
    (samplers.choice.best), its temperature and scores, and its FID above the decoder's floor."""
    fids, temperatures = sampler_fids(q)
    name = choice.best(fids)
    s = q["samples"] if name == samplers.PRIOR else q["samplers"][name]["samples"]
    out = {"sampler": name, "temperature": temperatures[name], "fid": s["fid"], "precision": s["precision"],
           "recall": s["recall"]}
    if "floor" in q:
        out["floor_gap_fid"] = s["fid"] - q["floor"]["fid"]
    return out
