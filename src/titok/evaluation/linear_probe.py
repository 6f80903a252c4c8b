"""Linear probing of frozen features: how linearly separable are the classes?

Recipe: features are standardised with the training set's per-dimension mean and std, then a
zero-initialised linear classifier is trained with cross-entropy, AdamW (or SGD with momentum)
and a cosine learning-rate schedule over all steps, on shuffled mini-batches (or the full batch).
Everything runs on the CPU and is deterministic for a given seed. The score is top-1 accuracy
on the validation features.

For the K latent tokens of a 1D tokenizer, features [N, K, D] are first pooled with
:func:`pool_tokens`: ``"mean"`` over tokens ([N, D]) or ``"concat"`` ([N, K * D]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PoolMode = Literal["mean", "concat"]


def pool_tokens(features: torch.Tensor, mode: PoolMode = "mean") -> torch.Tensor:
    """Pool token features [N, K, D] to one vector per sample: mean -> [N, D], concat -> [N, K * D]."""
    if features.dim() != 3:
        raise ValueError(f"token features must have shape [N, K, D], got {list(features.shape)}")
    if mode == "mean":
        return features.mean(dim=1)
    if mode == "concat":
        return features.flatten(1)
    raise ValueError(f"pooling mode must be 'mean' or 'concat', got {mode!r}")


@dataclass
class LinearProbeConfig:
    """Training recipe of the linear probe.

    Attributes:
        epochs: passes over the training features.
        batch_size: mini-batch size; 0 trains on the full batch each step.
        optimizer: ``"adamw"`` or ``"sgd"`` (with momentum ``momentum``).
        lr: peak learning rate, annealed to 0 with a cosine over all steps.
        weight_decay: weight decay (decoupled for AdamW, L2 for SGD); the bias is not decayed.
        momentum: SGD momentum.
        seed: seed of the batch shuffling.
        standardize: standardise features with the training mean/std.
    """

    epochs: int = 100
    batch_size: int = 256
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    seed: int = 0
    standardize: bool = True


@dataclass
class LinearProbeResult:
    """Outcome of :func:`linear_probe`.

    Attributes:
        top1: top-1 accuracy on the validation features, in [0, 1].
        train_top1: top-1 accuracy on the training features.
        classifier: the trained linear layer (applies to standardised features).
        mean, std: the standardisation (``(x - mean) / std``), shape [D] each.
    """

    top1: float
    train_top1: float
    classifier: nn.Linear
    mean: torch.Tensor
    std: torch.Tensor

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Class predictions [N] for raw features [N, D]."""
        return self.classifier((features.float() - self.mean) / self.std).argmax(dim=1)


def _check_split(features: torch.Tensor, labels: torch.Tensor, split: str) -> None:
    if features.dim() != 2:
        raise ValueError(f"{split} features must have shape [N, D], got {list(features.shape)}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"{split} labels must have shape [{features.shape[0]}], got {list(labels.shape)}")
    if labels.is_floating_point():
        raise ValueError(f"{split} labels must be integer class ids, got dtype {labels.dtype}")


def _make_optimizer(classifier: nn.Linear, config: LinearProbeConfig) -> torch.optim.Optimizer:
    groups = [
        {"params": [classifier.weight], "weight_decay": config.weight_decay},
        {"params": [classifier.bias], "weight_decay": 0.0},
    ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {config.optimizer!r}")


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    config: LinearProbeConfig | None = None,
    num_classes: int | None = None,
) -> LinearProbeResult:
    """Train a linear classifier on ``train_features`` and score it on ``val_features``.

    Args:
        train_features, val_features: features [N, D] (pool token features first).
        train_labels, val_labels: integer class ids [N].
        config: the recipe (default :class:`LinearProbeConfig`).
        num_classes: number of classes (default: largest label + 1).
    """
    config = config or LinearProbeConfig()
    _check_split(train_features, train_labels, "train")
    _check_split(val_features, val_labels, "val")
    if val_features.shape[1] != train_features.shape[1]:
        raise ValueError(f"feature dims differ: train {train_features.shape[1]}, val {val_features.shape[1]}")
    if config.epochs < 1 or config.batch_size < 0:
        raise ValueError(f"need epochs >= 1 and batch_size >= 0, got {config.epochs} and {config.batch_size}")
    train_x = train_features.detach().float().cpu()
    val_x = val_features.detach().float().cpu()
    train_y, val_y = train_labels.long().cpu(), val_labels.long().cpu()
    num_classes = num_classes or int(max(train_y.max(), val_y.max())) + 1

    if config.standardize:
        mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    else:
        mean, std = torch.zeros(train_x.shape[1]), torch.ones(train_x.shape[1])
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std

    classifier = nn.Linear(train_x.shape[1], num_classes)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = _make_optimizer(classifier, config)
    n = train_x.shape[0]
    batch_size = config.batch_size or n
    steps_per_epoch = math.ceil(n / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)

    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(classifier(train_x[index]), train_y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()

    classifier.requires_grad_(False)
    with torch.no_grad():
        train_top1 = float((classifier(train_x).argmax(dim=1) == train_y).float().mean())
        top1 = float((classifier(val_x).argmax(dim=1) == val_y).float().mean())
    return LinearProbeResult(top1=top1, train_top1=train_top1, classifier=classifier, mean=mean, std=std)
