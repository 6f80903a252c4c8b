"""The small classifier feature network and its training: shapes, save/load, recipe, loss falls."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from titok.errors import CheckpointError, ConfigError
from titok.evaluation.classifier_training import (
    ClassifierTrainingConfig,
    LabelledImages,
    augment,
    default_network_name,
    fit,
    top1_accuracy,
    train_classifier,
)
from titok.evaluation.feature_networks import network_fingerprint, resolve_feature_network
from titok.metrics import FeatureNetwork
from titok.models.classifier import Classifier, ClassifierConfig, load_classifier


def tiny_config(**overrides) -> ClassifierConfig:
    return ClassifierConfig(
        **{"name": "test32-resnet", "image_size": 32, "widths": (8, 16), "num_classes": 10, **overrides}
    )


@pytest.fixture(scope="module")
def labelled_list(tmp_path_factory, imagenette: Path) -> Path:
    """The first 40 Imagenette images as JPEG files and a ``path<TAB>label`` list."""
    folder = tmp_path_factory.mktemp("imagenette40")
    lines = []
    with tarfile.open(imagenette / "train-0000.tar") as tf:
        members = tf.getmembers()
        for cls_m, jpg_m in list(zip(members[0::2], members[1::2], strict=True))[:40]:
            label = int(tf.extractfile(cls_m).read())
            (folder / jpg_m.name).write_bytes(tf.extractfile(jpg_m).read())
            lines.append(f"{jpg_m.name}\t{label}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


@pytest.fixture(scope="module")
def images16(labelled_list: Path) -> LabelledImages:
    images, labels = [], []
    for line in labelled_list.read_text().splitlines()[:16]:
        name, label = line.split("\t")
        with Image.open(labelled_list.parent / name) as img:
            img = img.convert("RGB").resize((32, 32), Image.BICUBIC)
            images.append(torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(32, 32, 3))
        labels.append(int(label))
    return LabelledImages(torch.stack(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels))


def test_forward_shapes_name_and_protocol() -> None:
    model = Classifier(tiny_config()).eval()
    assert isinstance(model, FeatureNetwork)
    features, logits = model(torch.rand(3, 3, 32, 32))
    assert features.shape == (3, 16) and logits.shape == (3, 10)
    assert model.name == "test32-resnet" and model.feature_dim == 16
    # other input sizes are resized to the network's own
    features64, _ = model(torch.rand(2, 3, 64, 64))
    assert features64.shape == (2, 16)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="name"):
        tiny_config(name="a[b]")
    with pytest.raises(ConfigError, match="stem_stride"):
        tiny_config(stem_stride=3)
    with pytest.raises(ConfigError, match="unknown keys"):
        ClassifierConfig.from_dict({"name": "x", "depth": 3})


def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path, images16: LabelledImages) -> None:
    model = Classifier(tiny_config())
    config = ClassifierTrainingConfig(data="unused", epochs=1, batch_size=8, pad=0, warmup_epochs=0)
    fit(model, images16, config, max_steps=2, progress=False)  # moves weights and BatchNorm statistics
    model.eval()
    folder = model.save_pretrained(tmp_path / "clf")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["kind"] == "classifier" and meta["config"]["name"] == "test32-resnet"
    loaded = load_classifier(folder)
    x = torch.rand(4, 3, 32, 32)
    for a, b in zip(model(x), loaded(x), strict=True):
        assert torch.equal(a, b)
    assert network_fingerprint(loaded) == network_fingerprint(model)
    assert resolve_feature_network(folder).name == "test32-resnet"


def test_load_refuses_other_kinds_and_mismatched_weights(tmp_path: Path) -> None:
    folder = Classifier(tiny_config()).save_pretrained(tmp_path / "clf")
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["widths"] = [8, 32]
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match"):
        load_classifier(folder)
    meta["kind"] = "tokenizer"
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a classifier"):
        load_classifier(folder)
    with pytest.raises(CheckpointError, match="no such"):
        load_classifier(tmp_path / "missing")


def test_loss_falls_when_fitting_a_few_images(images16: LabelledImages) -> None:
    # A network this small (about 10k weights) needs some 80 steps at a high learning rate to
    # memorise 16 images: 30 steps at 5e-3 only take the loss from 2.30 to about 2.1.
    torch.manual_seed(0)
    model = Classifier(tiny_config())
    config = ClassifierTrainingConfig(
        data="unused",
        epochs=40,
        batch_size=8,
        lr=2e-2,
        pad=0,
        flip=False,
        label_smoothing=0.0,
        warmup_epochs=0,
    )
    result = fit(model, images16, config, progress=False)
    assert len(result.losses) == 80 and len(result.history) == 40
    first, last = sum(result.losses[:4]) / 4, sum(result.losses[-4:]) / 4
    assert last < 0.5 * first, (first, last)
    assert top1_accuracy(result.model, images16) > 0.8


def test_augment_crops_and_flips_without_changing_shape() -> None:
    images = torch.rand(6, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(augment(images, 0, False, gen), images)
    flipped = augment(images, 0, True, gen)
    for original, out in zip(images, flipped, strict=True):
        assert torch.equal(out, original) or torch.equal(out, original.flip(-1))
    cropped = augment(images, 2, False, gen)
    assert cropped.shape == images.shape and not torch.equal(cropped, images)


def test_default_name_follows_the_data_folder(imagenette: Path) -> None:
    assert default_network_name(str(imagenette), 64) == "imagenette64-resnet"
    assert default_network_name(str(imagenette / "train-{0000..0009}.tar"), 32) == "imagenette32-resnet"


def test_train_classifier_writes_a_feature_network_and_resumes(tmp_path: Path, labelled_list: Path) -> None:
    config = ClassifierTrainingConfig(
        data=str(labelled_list),
        name="tiny-resnet",
        image_size=32,
        holdout=8,
        widths=(8, 16),
        epochs=2,
        batch_size=16,
    )
    out = tmp_path / "clf"
    lines: list[str] = []
    result = train_classifier(config, out, progress=False, log=lines.append)
    assert result.val_top1 is not None and 0.0 <= result.val_top1 <= 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images"] == 32 and metrics["val_images"] == 8
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert any("val top-1" in line for line in lines)
    network = resolve_feature_network(out)
    assert network.name == "tiny-resnet" and network.config.num_classes == 10

    more = ClassifierTrainingConfig(**{**vars(config), "epochs": 3})
    resumed = train_classifier(more, out, resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert len(resumed.losses) == 2  # only the third epoch ran: 32 images / 16
