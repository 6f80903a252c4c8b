"""The linear probe: separable data is solved, random labels are not, runs are reproducible."""

from __future__ import annotations

import pytest
import torch

from titok.evaluation import LinearProbeConfig, linear_probe, pool_tokens


def _blobs(n_per_class: int, seed: int, classes: int = 4, dim: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated Gaussian blobs with a large, uninformative offset and scale per dimension."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.eye(classes, dim) * 6.0
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    points = centres[labels] + torch.randn(len(labels), dim, generator=gen)
    scale = torch.logspace(-2, 2, dim)  # standardisation has to undo this
    return points * scale + 100.0, labels


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_linearly_separable_blobs_are_solved(optimizer: str) -> None:
    train_x, train_y = _blobs(50, seed=0)
    val_x, val_y = _blobs(25, seed=1)
    config = LinearProbeConfig(
        epochs=30, batch_size=32, optimizer=optimizer, lr=0.01 if optimizer == "adamw" else 0.1
    )
    result = linear_probe(train_x, train_y, val_x, val_y, config)
    assert result.top1 == 1.0 and result.train_top1 == 1.0
    assert torch.equal(result.predict(val_x), val_y)


def test_random_labels_stay_near_chance() -> None:
    gen = torch.Generator().manual_seed(2)
    train_x, val_x = torch.randn(200, 8, generator=gen), torch.randn(200, 8, generator=gen)
    train_y, val_y = torch.randint(0, 4, (200,), generator=gen), torch.randint(0, 4, (200,), generator=gen)
    result = linear_probe(train_x, train_y, val_x, val_y, LinearProbeConfig(epochs=20, batch_size=0, lr=0.05))
    assert result.top1 < 0.45  # chance is 0.25


def test_same_seed_same_classifier_and_full_batch_mode() -> None:
    train_x, train_y = _blobs(20, seed=3)
    val_x, val_y = _blobs(5, seed=4)
    config = LinearProbeConfig(epochs=5, batch_size=16, seed=7)
    first = linear_probe(train_x, train_y, val_x, val_y, config)
    second = linear_probe(train_x, train_y, val_x, val_y, config)
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    other_seed = linear_probe(
        train_x, train_y, val_x, val_y, LinearProbeConfig(epochs=5, batch_size=16, seed=8)
    )
    assert not torch.equal(first.classifier.weight, other_seed.classifier.weight)
    full = linear_probe(train_x, train_y, val_x, val_y, LinearProbeConfig(epochs=50, batch_size=0, lr=0.05))
    assert full.top1 == 1.0


def test_pooling_of_token_features() -> None:
    tokens = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    assert torch.equal(pool_tokens(tokens, "mean"), tokens.mean(dim=1))
    concat = pool_tokens(tokens, "concat")
    assert concat.shape == (2, 12) and torch.equal(concat[1, 4:8], tokens[1, 1])
    with pytest.raises(ValueError, match="mean"):
        pool_tokens(tokens, "max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[N, K, D\]"):
        pool_tokens(tokens[0])


def test_input_validation() -> None:
    x, y = torch.randn(10, 4), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="labels"):
        linear_probe(x, y[:5], x, y)
    with pytest.raises(ValueError, match="feature dims"):
        linear_probe(x, y, torch.randn(10, 3), y)
    with pytest.raises(ValueError, match="integer"):
        linear_probe(x, y.float(), x, y)
