"""Every model, the sampler and each training mode on the test device.

The device is ``TITOK_TEST_DEVICE`` (default ``cpu``): ``benchmarks/gpu_check.py`` runs the tests
marked ``device`` (these, the exact-resume tests and the tiny training runs) with it set to
``cuda``. Each test checks that what it makes lives on that device (outputs, gradients, samples),
that it is finite, and, for the sampler, that a seed gives the same tokens twice on it.

Training goes wherever Accelerate puts it (a GPU when there is one), here in bfloat16 mixed
precision, which runs on CPUs and GPUs alike (the published recipes' ``fp16`` needs a GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.generator_fixtures import small
from tests.training_runs import RECIPES, train_recipe
from titok import TiTok
from titok.data.loader import DataConfig
from titok.losses.discriminator import NLayerDiscriminator
from titok.models.classifier import Classifier, ClassifierConfig
from titok.models.vqgan import VQGAN, VQGANConfig
from titok.pretokenize import pretokenize
from titok.training import TrainResult, load_recipe, make_task, train

pytestmark = pytest.mark.device

TINY_VQGAN = VQGANConfig(channel_mult=(1, 1, 2), hidden_channels=32, num_res_blocks=1, z_channels=32)


def _titok(**overrides: object) -> Callable[[torch.device], tuple[torch.nn.Module, torch.Tensor]]:
    def build(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
        model = TiTok.from_preset("titok-tiny-32", **overrides).to(device).train()
        images = torch.rand(2, 3, 32, 32, device=device)
        out = model(
            images, lengths=torch.tensor([16, 3], device=device) if overrides.get("variable_length") else None
        )
        return model, out.decoded.float().square().mean() + out.quantizer.loss

    return build


def _vqgan(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    model = VQGAN(TINY_VQGAN).to(device).train()
    images, q = model(torch.rand(2, 3, 32, 32, device=device))
    return model, images.float().square().mean() + q.loss


def _generator(preset: str) -> Callable[[torch.device], tuple[torch.nn.Module, torch.Tensor]]:
    def build(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
        model = small(preset).to(device).train()
        tokens = torch.randint(0, model.config.codebook_size + 1, (3, model.config.seq_len), device=device)
        labels = torch.randint(0, model.config.num_classes, (3,), device=device)
        return model, model(tokens, labels, label_drop_prob=0.5).float().logsumexp(-1).mean()

    return build


def _discriminator(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    model = NLayerDiscriminator(hidden_channels=32, num_stages=2, norm_groups=8, pool_size=8).to(device)
    return model, model(torch.rand(2, 3, 32, 32, device=device)).float().mean()


def _classifier(device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    model = Classifier(ClassifierConfig(image_size=32, widths=(8, 16))).to(device).train()
    logits, features = model(torch.rand(2, 3, 32, 32, device=device))
    return model, logits.float().logsumexp(-1).mean() + features.float().mean()


MODELS = {
    "titok-vq-pixels": _titok(),
    "titok-vae": _titok(quantize_mode="vae"),
    "titok-proxy-head": _titok(decoder_head="proxy"),
    "titok-vqgan-head": _titok(decoder_head="vqgan"),
    "titok-prefixes-refiner": _titok(variable_length=True, refine_channels=8),
    "vqgan": _vqgan,
    "generator-bert": _generator("tiny"),
    "generator-uvit": _generator("tiny-uvit"),
    "discriminator": _discriminator,
    "classifier": _classifier,
}


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_runs_forward_and_backward_on_the_device(
    name: str, autocast: bool, test_device: torch.device
) -> None:
    with torch.autocast(test_device.type, dtype=torch.bfloat16, enabled=autocast):
        model, loss = MODELS[name](test_device)
    assert loss.device.type == test_device.type and torch.isfinite(loss)
    loss.backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    assert trained, f"{name}: no parameter got a gradient"
    for pname, p in trained:
        assert p.grad.device == p.device and p.device.type == test_device.type, pname
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient of {pname}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_inference_stays_on_the_device_and_a_seed_repeats(
    dtype: torch.dtype, test_device: torch.device
) -> None:
    torch.manual_seed(0)
    tokenizer = TiTok.from_preset("titok-tiny-32", variable_length=True).to(test_device).eval()
    images = torch.rand(3, 3, 32, 32)  # on the CPU: encode moves its input to the model
    tokens = tokenizer.encode(images, dtype=dtype, num_tokens=5)
    assert tokens.shape == (3, 5) and tokens.device.type == test_device.type
    pixels = tokenizer.decode(tokens, dtype=dtype)
    assert pixels.shape == (3, 3, 32, 32) and pixels.device.type == test_device.type
    assert torch.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1

    generator = small("tiny").to(test_device)
    labels = torch.tensor([0, 3, 6], device=test_device)
    first = generator.generate(labels, num_steps=4, guidance_scale=2.0, seed=7, dtype=dtype)
    again = generator.generate(labels, num_steps=4, guidance_scale=2.0, seed=7, dtype=dtype)
    assert first.device.type == test_device.type and first.shape == (3, generator.config.seq_len)
    assert torch.equal(first, again), "the same seed gave other tokens on the same device"
    assert first.min() >= 0 and first.max() < generator.config.codebook_size
    prefix = generator.generate(labels, num_steps=2, seed=7, dtype=dtype, num_tokens=3)
    assert prefix.shape == (3, 3) and prefix.device.type == test_device.type


BF16 = [
    "training.mixed_precision=bf16",
    "training.batch_size=2",
    "training.max_train_steps=2",
    "experiment.save_every=2",
]


@pytest.mark.parametrize("mode", ["single_stage", "stage1", "stage2", "vqgan"])
def test_a_few_training_steps_in_bfloat16_mixed_precision(
    mode: str, shard: Path, vqgan_run: TrainResult, tmp_path: Path
) -> None:
    recipe, extra = {
        "single_stage": ("tiny_single_stage", ["prefix.enabled=true"]),
        "stage1": ("tiny_stage1", [f"teacher={vqgan_run.export_dir}"]),
        "stage2": ("tiny_stage2", [f"teacher={vqgan_run.export_dir}", "losses.discriminator_start=1"]),
        "vqgan": ("tiny_vqgan", ["losses.discriminator_start=1"]),
    }[mode]
    if mode == "stage2":  # stage 2 starts from a stage-1 model
        first = train_recipe("tiny_stage1", "stage1", tmp_path / "s1", f"data.train={shard}", *BF16, *extra)
        extra = [*extra, f"init_from={first.export_dir}"]
    result = train_recipe(recipe, mode, tmp_path / mode, f"data.train={shard}", *BF16, *extra)
    _check_run(result)


def test_a_few_generator_training_steps_in_bfloat16_mixed_precision(shard: Path, tmp_path: Path) -> None:
    tokenizer = TiTok.from_preset("titok-tiny-32").eval()
    tokenizer.save_pretrained(tmp_path / "tok")
    data = DataConfig(path=str(shard), batch_size=8, image_size=32)
    pretokenize(tokenizer, data, tmp_path / "tokens", model_name=str(tmp_path / "tok"), progress=False)
    recipe = load_recipe(
        RECIPES / "tiny_generator.yaml",
        [f"data.train={tmp_path / 'tokens'}", "experiment.progress_bar=false", *BF16],
        mode="generator",
    )
    _check_run(train(make_task(recipe), output_dir=tmp_path / "run"))


def _check_run(result: TrainResult) -> None:
    assert result.step == 2 and result.export_dir is not None
    losses = [logs["total"] for logs in result.history]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
