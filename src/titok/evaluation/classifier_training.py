"""Training the small classifier that serves as an offline feature network for FID and IS.

Command line::

    titok train classifier --data ../shared/data/imagenette --out runs/imagenette64-resnet
        [--image-size 64] [--holdout 500] [--epochs 30] [--batch-size 128] [--lr 2e-3] [--resume]

then ``titok eval ... --feature-net runs/imagenette64-resnet``.

Data: the ``train`` split of the data spec (all images but the ``holdout`` held out by
:class:`titok.evaluation.reconstruction.DataSplit`) is trained on, the held-out ``val`` split
scored. Both are decoded once (resize the shorter side, center crop to ``image_size``) and kept
in memory as uint8 (Imagenette at 64 px: about 110 MB).

Recipe: AdamW (betas 0.9/0.999, weight decay on conv/linear weights only), learning rate with a
linear warm-up then a cosine decay to 0 (set per step), cross-entropy with label smoothing,
augmentation by random crops of the reflect-padded image (``pad`` pixels) and horizontal flips.
The batch order and augmentation of epoch ``e`` come from generators seeded by ``(seed, e)``.

Output folder: ``config.json`` + ``model.safetensors`` (the classifier, loadable with
:func:`titok.models.classifier.load_classifier`), ``metrics.json`` (val top-1 and per-epoch
history) and ``checkpoint.pt`` (model, optimizer and epoch, written after every epoch;
``resume=True`` continues from it).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from titok.errors import CheckpointError, ConfigError, DataError
from titok.evaluation.reconstruction import DataSplit, split_batches
from titok.models.classifier import Classifier, ClassifierConfig
from titok.training.optim import lr_factor

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"


@dataclass
class ClassifierTrainingConfig:
    """What to train on and how.

    Attributes:
        data: data spec with labels (tar shards with ``.cls``, ImageFolder tree, labelled list).
        name: feature-network name (default ``"<data folder><image_size>-resnet"``).
        image_size: training resolution.
        holdout: images held out for validation (the ``val`` split); 0 trains on everything
            and skips validation.
        holdout_seed: seed of the holdout choice.
        max_train_images, max_val_images: keep only the first N images of each split.
        num_classes: classes (default: largest training label + 1).
        widths, blocks_per_stage, stem_stride: architecture (see :class:`ClassifierConfig`).
        epochs: passes over the training images.
        batch_size: images per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay (not on biases and norms).
        warmup_epochs: linear warm-up length, in epochs.
        label_smoothing: cross-entropy label smoothing.
        pad: reflect padding before the random crop (0: no crop augmentation).
        flip: random horizontal flips.
        seed: seed of initialisation, batch order and augmentation.
        num_workers: DataLoader workers for the one-time decoding.
    """

    data: str | list[str]
    name: str | None = None
    image_size: int = 64
    holdout: int = 500
    holdout_seed: int = 0
    max_train_images: int | None = None
    max_val_images: int | None = None
    num_classes: int | None = None
    widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks_per_stage: int = 1
    stem_stride: int = 2
    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    pad: int = 4
    flip: bool = True
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.pad < 0 or self.warmup_epochs < 0:
            raise ConfigError(
                "classifier training: need epochs >= 1, batch_size >= 1, lr > 0, pad >= 0, warmup_epochs >= 0"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def network_name(self) -> str:
        """The explicit name, or one derived from the data folder and image size."""
        return self.name or default_network_name(self.data, self.image_size)


def default_network_name(data: str | list[str], image_size: int) -> str:
    """``"<data folder><size>-resnet"``, e.g. ``"imagenette64-resnet"`` for ``.../imagenette``."""
    spec = Path(str(data[0] if isinstance(data, list) else data).rstrip("/"))
    stem = spec.name if spec.is_dir() else spec.parent.name
    stem = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "data"
    return f"{stem}{image_size}-resnet"


@dataclass
class LabelledImages:
    """Decoded images in memory: uint8 (N, 3, S, S) and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def load_split(
    split: DataSplit, image_size: int, progress: bool = True, batch_size: int = 256
) -> LabelledImages:
    """Decode every labelled image of ``split`` once (center crops of side ``image_size``)."""
    images, labels = [], []
    for batch in split_batches(
        split, image_size, batch_size, progress, desc=f"decode {split.split}", require_labels=True
    ):
        if (batch["label"] < 0).any():
            raise DataError(f"{split.path}: the classifier needs labelled images (found unlabelled ones)")
        images.append(batch["image"].mul(255).round().to(torch.uint8))
        labels.append(batch["label"])
    return LabelledImages(torch.cat(images), torch.cat(labels))


def augment(images: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the reflect-padded batch and random horizontal flip: (B, 3, S, S) -> same shape."""
    batch, _, height, width = images.shape
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
        dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
        rows = (dy[:, None] + torch.arange(height)[None]).view(batch, 1, height, 1)
        cols = (dx[:, None] + torch.arange(width)[None]).view(batch, 1, 1, width)
        index = torch.arange(batch).view(batch, 1, 1, 1)
        images = padded[index, torch.arange(3).view(1, 3, 1, 1), rows, cols]
    if flip:
        flipped = torch.rand(batch, generator=generator) < 0.5
        images = torch.where(flipped.view(batch, 1, 1, 1), images.flip(-1), images)
    return images


def make_optimizer(model: Classifier, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on conv and linear weights only."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


@torch.no_grad()
def top1_accuracy(model: Classifier, data: LabelledImages, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``data``."""
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    correct = 0
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(device).float() / 255.0
        _, logits = model(images)
        correct += int((logits.argmax(dim=1).cpu() == data.labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(data), 1)


@dataclass
class TrainingResult:
    """Outcome of :func:`fit`.

    Attributes:
        model: the trained classifier (eval mode).
        val_top1: top-1 on the validation images after the last epoch (None without them).
        losses: training loss of every step run in this call.
        history: per epoch ``{"epoch", "train_loss", "train_top1", "val_top1", "seconds"}``.
    """

    model: Classifier
    val_top1: float | None
    losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


def fit(
    model: Classifier,
    train: LabelledImages,
    config: ClassifierTrainingConfig,
    val: LabelledImages | None = None,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train ``model`` on in-memory images with the recipe of ``config``.

    Args:
        model: the classifier (on the device to train on).
        train, val: training and validation images.
        config: the recipe (data fields unused).
        checkpoint: file written after every epoch (None: none).
        resume: continue from ``checkpoint`` when it exists.
        max_steps: stop after this many steps in this call (for quick checks).
        progress: show a progress bar per epoch.
        log: called with one line per epoch.
    """
    device = model.head.weight.device
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    start_epoch, history = 0, []
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{checkpoint}: cannot resume from it ({exc})") from exc
        start_epoch, history = int(state["epoch"]), json.loads(state["history"])
    losses: list[float] = []
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        model.train()
        rng = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(train), generator=rng)
        epoch_loss, epoch_correct, seen = 0.0, 0, 0
        bar = tqdm(
            total=len(train),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="img",
            disable=None if progress else True,
            file=sys.stderr,
            leave=False,
        )
        for begin in range(0, len(train), config.batch_size):
            if max_steps is not None and len(losses) >= max_steps:
                break
            index = order[begin : begin + config.batch_size]
            images = augment(train.images[index].float() / 255.0, config.pad, config.flip, rng).to(device)
            labels = train.labels[index].to(device)
            for group in optimizer.param_groups:
                # the training modes' schedule, counted from 1: the first step is not spent at rate 0
                group["lr"] = config.lr * lr_factor(step + 1, warmup_steps, total_steps, config.lr, 0.0)
            _, logits = model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            value = float(loss.detach())
            losses.append(value)
            epoch_loss += value * len(index)
            epoch_correct += int((logits.argmax(dim=1) == labels).sum())
            seen += len(index)
            bar.update(len(index))
            bar.set_postfix(loss=f"{value:.3f}")
        bar.close()
        if seen < len(train):  # stopped early by max_steps: the epoch is not complete
            break
        record = {
            "epoch": epoch + 1,
            "train_loss": epoch_loss / seen,
            "train_top1": epoch_correct / seen,
            "val_top1": top1_accuracy(model, val) if val is not None else None,
            "seconds": time.perf_counter() - began,
        }
        history.append(record)
        if log is not None:
            val_text = f", val top-1 {record['val_top1']:.4f}" if val is not None else ""
            log(
                f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}, "
                f"train top-1 {record['train_top1']:.4f}{val_text} ({record['seconds']:.0f} s)"
            )
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, optimizer, epoch + 1, history)
    model.eval()
    val_top1 = top1_accuracy(model, val) if val is not None else None
    return TrainingResult(model=model, val_top1=val_top1, losses=losses, history=history)


def _save_checkpoint(
    path: Path, model: Classifier, optimizer: torch.optim.Optimizer, epoch: int, history: list[dict[str, Any]]
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "history": json.dumps(history),
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    partial.replace(path)


def train_classifier(
    config: ClassifierTrainingConfig,
    output_dir: str | Path,
    *,
    device: torch.device | str = "cpu",
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Decode the data, train (see the module docstring) and save the classifier into ``output_dir``."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    split = "train" if config.holdout > 0 else "all"
    train_split = DataSplit(
        config.data,
        split,
        max(config.holdout, 0),
        config.holdout_seed,
        config.max_train_images,
        config.num_workers,
    )
    train = load_split(train_split, config.image_size, progress)
    val = None
    if config.holdout > 0:
        val_split = DataSplit(
            config.data, "val", config.holdout, config.holdout_seed, config.max_val_images, config.num_workers
        )
        val = load_split(val_split, config.image_size, progress)
    num_classes = config.num_classes or int(train.labels.max()) + 1
    if val is not None and int(val.labels.max()) >= num_classes:
        raise DataError(
            f"{config.data}: validation label {int(val.labels.max())} >= num_classes {num_classes}"
        )
    if log is not None:
        log(
            f"training {config.network_name()!r} on {len(train)} images ({num_classes} classes), "
            f"validating on {len(val) if val is not None else 0}"
        )
    torch.manual_seed(config.seed)
    model_config = ClassifierConfig(
        name=config.network_name(),
        num_classes=num_classes,
        image_size=config.image_size,
        widths=config.widths,
        blocks_per_stage=config.blocks_per_stage,
        stem_stride=config.stem_stride,
    )
    model = Classifier(model_config).to(device)
    result = fit(
        model,
        train,
        config,
        val,
        checkpoint=output / CHECKPOINT_FILE,
        resume=resume,
        progress=progress,
        log=log,
    )
    result.model.save_pretrained(output)
    summary = {
        "name": model_config.name,
        "val_top1": result.val_top1,
        "train_images": len(train),
        "val_images": len(val) if val is not None else 0,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "history": result.history,
    }
    (output / METRICS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return result


__all__ = [
    "ClassifierTrainingConfig",
    "LabelledImages",
    "TrainingResult",
    "augment",
    "default_network_name",
    "fit",
    "load_split",
    "top1_accuracy",
    "train_classifier",
]
