"""AdamW parameter groups and the learning-rate schedule of every training mode.

Weight decay spares norms, biases, embeddings and the learned tokens (the authors' rule);
``optimizer.embedding_lr_scale`` gives the learned tokens and positional embeddings a rate of
their own. The schedule is a linear warm-up then a cosine decay to ``end_lr`` (or constant).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

#: Substrings of parameter names that get no weight decay (besides all 0-d and 1-d tensors).
NO_DECAY_NAMES = ("ln", "bias", "latent_tokens", "mask_token", "embedding", "norm", "gamma", "embed")
#: Parameter-name endings that ``optimizer.embedding_lr_scale`` applies to: learned tokens and
#: positional embeddings.
EMBEDDING_NAMES = ("latent_tokens", "positional_embedding", "mask_token", "class_embedding")


def lr_factor(
    step: int, warmup: int, total: int, base_lr: float, end_lr: float, name: str = "cosine"
) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then cosine to ``end_lr``."""
    if step < warmup:
        return step / max(1, warmup)
    if name == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    ratio = max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))
    return (end_lr + (base_lr - end_lr) * ratio) / base_lr if base_lr > 0 else 0.0


def parameter_groups(
    module: nn.Module, weight_decay: float, learning_rate: float, embedding_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: without decay (norms, biases, embeddings, ...) and
    with; with ``embedding_lr_scale`` != 1 a third group, without decay, holds the parameters named
    in :data:`EMBEDDING_NAMES` at ``learning_rate * embedding_lr_scale``."""
    plain, decayed, embeddings = [], [], []
    scaled = embedding_lr_scale != 1.0
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if scaled and name.endswith(EMBEDDING_NAMES):
            embeddings.append(param)
        elif param.ndim < 2 or any(s in name for s in NO_DECAY_NAMES):
            plain.append(param)
        else:
            decayed.append(param)
    groups = [
        {"params": plain, "weight_decay": 0.0, "lr": learning_rate},
        {"params": decayed, "weight_decay": weight_decay, "lr": learning_rate},
    ]
    if scaled:
        groups.append({"params": embeddings, "weight_decay": 0.0, "lr": learning_rate * embedding_lr_scale})
    return groups
