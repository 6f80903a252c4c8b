"""Closed-form and hand-computed checks of FID, IS, PSNR, SSIM, codebook usage and the accumulator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from titok.errors import DataError
from titok.metrics import (
    FeatureAccumulator,
    FeatureNetwork,
    GaussianAccumulator,
    GaussianStats,
    codebook_usage,
    fid_between,
    frechet_distance,
    generation_metrics,
    inception_score,
    load_reference_stats,
    metric_key,
    psnr,
    save_reference_stats,
    ssim,
    token_counts,
    usage_from_counts,
)
from titok.metrics import frechet as frechet_module

# --- Fréchet distance -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_distance_matches_closed_form_for_diagonal_covariances(method: str) -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3.0, size=6), rng.uniform(0.1, 3.0, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2), method=method)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_one_dimensional() -> None:
    # N(1, 4) vs N(-2, 1): 9 + 4 + 1 - 2 * 2 = 10.
    assert frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[1.0]])
    ) == pytest.approx(10.0)


def test_frechet_methods_agree_on_full_covariances() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mu1, mu2 = a.mean(0), b.mean(0)
    exact = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert exact > 1.0
    assert frechet_distance(mu1, s1, mu2, s2, method="eigh") == pytest.approx(exact, rel=1e-7)
    # Symmetric in its two Gaussians.
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(exact, rel=1e-7)


def test_fid_of_a_sample_set_against_itself_is_zero() -> None:
    rng = np.random.default_rng(2)
    acc = GaussianAccumulator("toy")
    acc.update(rng.normal(size=(500, 24)) * 3 + 1)
    stats = acc.compute()
    assert abs(fid_between(stats, stats)) < 1e-8
    assert abs(fid_between(stats, stats, method="eigh")) < 1e-8


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_near_singular_covariances_do_not_crash(method: str) -> None:
    rng = np.random.default_rng(3)
    few = rng.normal(size=(5, 40))  # rank-4 covariance in 40 dims
    other = rng.normal(size=(6, 40)) + 0.5
    s1, s2 = np.cov(few, rowvar=False), np.cov(other, rowvar=False)
    value = frechet_distance(few.mean(0), s1, other.mean(0), s2, method=method)
    assert math.isfinite(value) and value > 0


def test_non_finite_sqrtm_is_retried_with_a_diagonal_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sqrtm = frechet_module._sqrtm
    seen: list[np.ndarray] = []

    def first_call_fails(matrix: np.ndarray) -> np.ndarray | None:
        seen.append(matrix)
        return np.full_like(matrix, np.nan) if len(seen) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(frechet_module, "_sqrtm", first_call_fails)
    s = np.diag([1.0, 2.0, 0.0])
    with pytest.warns(RuntimeWarning, match="adding"):
        value = frechet_distance(np.zeros(3), s, np.zeros(3), s, eps=1e-6)
    assert len(seen) == 2
    assert np.allclose(seen[1], (s + 1e-6 * np.eye(3)) @ (s + 1e-6 * np.eye(3)))
    assert value == pytest.approx(0.0, abs=1e-5)


def test_large_imaginary_part_is_an_error() -> None:
    # A "covariance" with a negative variance gives sqrt(-1) on the diagonal.
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0]))


def test_frechet_distance_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_gaussian_accumulator_equals_numpy_over_uneven_batches() -> None:
    rng = np.random.default_rng(4)
    data = rng.normal(size=(103, 7)) * np.arange(1, 8) + 5.0
    acc = GaussianAccumulator("toy")
    for start, stop in [(0, 1), (1, 40), (40, 41), (41, 103)]:
        acc.update(torch.from_numpy(data[start:stop]).float() if start == 41 else data[start:stop])
    stats = acc.compute()
    assert stats.count == 103 and stats.feature_network == "toy"
    assert np.allclose(stats.mu, data.mean(0), atol=1e-5)
    assert np.allclose(stats.sigma, np.cov(data, rowvar=False), atol=1e-4)


def test_fid_refuses_to_mix_feature_networks() -> None:
    a = GaussianStats(np.zeros(2), np.eye(2), 10, "inception-v3-2015-12-05")
    b = GaussianStats(np.zeros(2), np.eye(2), 10, "imagenette64-resnet")
    with pytest.raises(ValueError, match="different feature networks"):
        fid_between(a, b)


def test_reference_stats_round_trip_and_label_checks(tmp_path) -> None:
    stats = GaussianStats(np.arange(3.0), np.diag([1.0, 2.0, 3.0]), 42, "toy-net")
    path = save_reference_stats(stats, tmp_path / "ref")
    assert path.name == "ref.npz"
    loaded = load_reference_stats(path)
    assert loaded.count == 42 and loaded.feature_network == "toy-net"
    assert np.array_equal(loaded.mu, stats.mu) and np.array_equal(loaded.sigma, stats.sigma)
    assert load_reference_stats(path, feature_network="toy-net").count == 42
    with pytest.raises(DataError, match="'toy-net', expected 'other'"):
        load_reference_stats(path, feature_network="other")

    unlabelled = tmp_path / "adm_style.npz"
    np.savez(unlabelled, mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(DataError, match="which feature network"):
        load_reference_stats(unlabelled)
    adopted = load_reference_stats(unlabelled, feature_network="inception-v3-2015-12-05")
    assert adopted.feature_network == "inception-v3-2015-12-05" and adopted.count == 0

    with pytest.raises(DataError, match="no such"):
        load_reference_stats(tmp_path / "missing.npz")
    broken = tmp_path / "broken.npz"
    np.savez(broken, mu=np.zeros(3), sigma=np.eye(2))
    with pytest.raises(DataError, match="sigma"):
        load_reference_stats(broken)


# --- Inception Score --------------------------------------------------------------------------


def test_inception_score_is_one_for_uniform_predictions() -> None:
    mean, std = inception_score(np.full((100, 7), 1 / 7), splits=10)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_is_the_class_count_for_confident_balanced_predictions() -> None:
    classes = 8
    probs = torch.eye(classes).repeat(10, 1)  # 80 one-hot rows, each split holds every class once
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(classes) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_between_extremes_and_validates_input() -> None:
    probs = torch.softmax(torch.randn(200, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    mean, _ = inception_score(probs, splits=4)
    assert 1.0 < mean < 5.0
    with pytest.raises(ValueError, match="softmax"):
        inception_score(torch.randn(20, 5), splits=2)


# --- PSNR / SSIM ------------------------------------------------------------------------------


def test_psnr_identical_images_is_infinite_and_constant_offset_is_known() -> None:
    a = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8
    assert torch.isinf(psnr(a, a)).all()
    # MSE = 0.1^2 -> 10 log10(1 / 0.01) = 20 dB; with data_range 2, 10 log10(4 / 0.01).
    assert torch.allclose(psnr(a, a + 0.1), torch.full((2,), 20.0, dtype=torch.float64), atol=1e-4)
    assert psnr(a, a + 0.1, data_range=2.0)[0].item() == pytest.approx(10 * math.log10(400), abs=1e-4)


def test_psnr_is_per_image() -> None:
    a = torch.zeros(2, 3, 8, 8)
    b = a.clone()
    b[1] += 0.01  # only the second image differs: 40 dB
    got = psnr(a, b)
    assert got.shape == (2,) and torch.isinf(got[0]) and got[1].item() == pytest.approx(40.0, abs=1e-3)


def test_ssim_identical_is_one_symmetric_and_lower_for_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=gen)
    noisy = (a + 0.2 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64), atol=1e-9)
    forward, backward = ssim(a, noisy), ssim(noisy, a)
    assert torch.allclose(forward, backward, atol=1e-12)
    assert (forward < 0.9).all() and (forward > 0).all()
    assert (ssim(a, (a + 0.02 * torch.randn(a.shape, generator=gen)).clamp(0, 1)) > forward).all()


def test_ssim_of_constant_images_is_the_luminance_term() -> None:
    # Flat images have zero variance, so SSIM reduces to (2 x y + C1) / (x^2 + y^2 + C1).
    x, y, c1 = 0.3, 0.7, 0.01**2
    expected = (2 * x * y + c1) / (x**2 + y**2 + c1)
    got = ssim(torch.full((1, 3, 16, 16), x), torch.full((1, 3, 16, 16), y))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_ssim_needs_the_window_to_fit() -> None:
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


# --- Codebook usage ---------------------------------------------------------------------------


def test_codebook_usage_of_uniform_and_collapsed_tokens() -> None:
    uniform = codebook_usage(torch.arange(16).repeat(5).view(10, 8), codebook_size=16)
    assert uniform["used_fraction"] == 1.0 and uniform["perplexity"] == pytest.approx(16.0)
    assert uniform["entropy_bits"] == pytest.approx(4.0)
    collapsed = codebook_usage(np.full((4, 32), 3), codebook_size=64)
    assert collapsed["used_fraction"] == pytest.approx(1 / 64) and collapsed["perplexity"] == pytest.approx(
        1.0
    )


def test_codebook_counts_accumulate_and_validate() -> None:
    counts = token_counts(torch.tensor([0, 1, 1]), 4) + token_counts(torch.tensor([[1, 2]]), 4)
    assert counts.tolist() == [1, 3, 1, 0]
    usage = usage_from_counts(counts)
    probs = np.array([1, 3, 1]) / 5
    assert usage["used_fraction"] == 0.75
    assert usage["perplexity"] == pytest.approx(math.exp(-(probs * np.log(probs)).sum()))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        token_counts(torch.tensor([4]), 4)
    with pytest.raises(ValueError, match="integer"):
        token_counts(torch.tensor([0.5]), 4)


# --- Feature accumulation with a pluggable feature network -----------------------------------


class ToyFeatureNetwork(nn.Module):
    """Mean colour features and 3 logits; a stand-in for any feature network."""

    name = "toy-colour"

    def __init__(self, with_logits: bool = True) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 3)
        self.with_logits = with_logits

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = images.mean(dim=(2, 3))
        return features, (self.proj(features) * 50 if self.with_logits else None)


def test_accumulator_reports_metrics_under_the_network_name() -> None:
    net = ToyFeatureNetwork()
    assert isinstance(net, FeatureNetwork)
    acc = FeatureAccumulator(net)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        acc.update(torch.rand(8, 3, 12, 12, generator=gen))
    summary = acc.compute()
    assert summary.count == 24 and summary.stats.mu.shape == (3,) and summary.probs.shape == (24, 3)
    assert summary.feature_network == "toy-colour"

    results = generation_metrics(summary, reference=summary.stats, is_splits=4)
    assert set(results) == {"FID[toy-colour]", "IS[toy-colour]", "IS_std[toy-colour]"}
    assert abs(results[metric_key("FID", "toy-colour")]) < 1e-9
    assert results["IS[toy-colour]"] >= 1.0

    other = GaussianStats(summary.stats.mu, summary.stats.sigma, 24, "inception-v3-2015-12-05")
    with pytest.raises(ValueError, match="different feature networks"):
        generation_metrics(summary, reference=other)


def test_accumulator_without_logits_and_input_checks() -> None:
    acc = FeatureAccumulator(ToyFeatureNetwork(with_logits=False))
    acc.update(torch.rand(4, 3, 8, 8))
    assert generation_metrics(acc.compute()) == {}
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        acc.update(torch.rand(2, 3, 8, 8) * 255)
    with pytest.raises(ValueError, match="B, 3, H, W"):
        acc.update(torch.rand(2, 1, 8, 8))
    with pytest.raises(TypeError, match="name"):
        FeatureAccumulator(nn.Linear(2, 2))
