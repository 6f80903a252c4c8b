"""Generator training on pretokenized Imagenette tokens: the loss falls, the export works, resume is
exact, the token stream, the authors' loss, and recipe errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import typer
from safetensors.torch import load_file

from titok import Generator, TiTok
from titok.data.loader import DataConfig
from titok.errors import ConfigError, DataError
from titok.pretokenize import TokenDataset, load_tokens, pretokenize
from titok.training import train
from titok.training.config import load_recipe
from titok.training.tasks.generator import GeneratorTask, masked_token_loss
from titok.training.token_loader import TokenLoader

RECIPE = Path(__file__).resolve().parents[1] / "src" / "titok" / "recipes" / "tiny_generator.yaml"
QUIET = ["experiment.progress_bar=false", "experiment.log_every=5", "lr_scheduler.warmup_steps=2"]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory, imagenette: Path) -> dict[str, Path]:
    """48 Imagenette images (32 px) encoded by a freshly initialised ``titok-tiny-32``, with flips."""
    root = tmp_path_factory.mktemp("tokens")
    torch.manual_seed(0)
    tokenizer = TiTok.from_preset("titok-tiny-32").eval()
    tokenizer.save_pretrained(root / "tok")
    data = DataConfig(path=str(imagenette / "train-0000.tar"), batch_size=16, max_samples=48)
    pretokenize(tokenizer, data, root / "tokens", model_name=str(root / "tok"), shard_size=48, progress=False)
    return {"tokens": root / "tokens", "tok": root / "tok"}


def recipe(tokens: dict[str, Path], *overrides: str):
    return load_recipe(RECIPE, [f"data.train={tokens['tokens']}", *QUIET, *overrides], mode="generator")


def test_tiny_generator_learns_and_exports(tokens, tmp_path):
    r = recipe(
        tokens,
        "training.max_train_steps=40",
        "training.batch_size=16",
        "experiment.image_every=40",
        "experiment.save_every=40",
        "experiment.num_images=4",
    )
    result = train(GeneratorTask(r), output_dir=tmp_path / "run")
    losses = [h["total"] for h in result.history]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert all(0.0 <= h["masked_accuracy"] <= 1.0 and 0.0 < h["mask_ratio"] <= 1.0 for h in result.history)

    # The export: loadable, names its classes and (as an absolute path) the tokens' tokenizer.
    gen = Generator.from_pretrained(result.export_dir)
    assert (gen.config.seq_len, gen.config.codebook_size, gen.config.num_classes) == (16, 1024, 10)
    assert gen.config.class_names[0] == "tench" and gen.config.tokenizer == str(tokens["tok"].resolve())
    assert gen.generate([0, 9], seed=0).shape == (2, 16)
    # A sample grid decoded by that tokenizer: one row of 4 samples, 32 px each with 2 px padding.
    from PIL import Image

    grid = Image.open(tmp_path / "run" / "images" / "step-00000040.png")
    assert grid.size == (4 * 34 + 2, 34 + 2)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 40 and {"total", "masked_accuracy", "lr/model"} <= set(logged[-1])


def _final_state(run: Path, step: int) -> dict[str, dict[str, torch.Tensor]]:
    folder = run / f"checkpoint-{step:08d}"
    state = torch.load(folder / "state.pt", weights_only=True)
    optimizer = {
        f"{i}.{k}": v for i, s in state["optimizers"]["model"]["state"].items() for k, v in s.items()
    }
    return {
        "model": load_file(folder / "model.safetensors"),
        "ema": load_file(folder / "ema.safetensors"),
        "optimizer": {k: torch.as_tensor(v) for k, v in optimizer.items()},
    }


@pytest.mark.device
def test_resume_is_exact_through_the_cli_command(tokens, tmp_path):
    from titok.cli.train import generator

    app = typer.Typer()
    app.command()(generator)
    extra = [
        "training.max_train_steps=12",
        "training.batch_size=8",
        "experiment.image_every=0",
        "experiment.save_every=6",
    ]
    common = [f"data.train={tokens['tokens']}", *QUIET, *extra]
    straight = train(GeneratorTask(recipe(tokens, *extra)), output_dir=tmp_path / "a")
    assert straight.step == 12

    def cli(*args: str) -> None:
        app(
            ["--config", str(RECIPE), "--output-dir", str(tmp_path / "b"), *args, *common],
            standalone_mode=False,
        )

    cli("training.stop_at_step=6")
    assert (tmp_path / "b" / "checkpoint-00000006").is_dir() and not (tmp_path / "b" / "export").exists()
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        cli()
    cli("--resume")
    a, b = _final_state(tmp_path / "a", 12), _final_state(tmp_path / "b", 12)
    for part in ("model", "ema", "optimizer"):
        assert a[part].keys() == b[part].keys() and a[part]
        for name in a[part]:
            torch.testing.assert_close(b[part][name], a[part][name], rtol=0, atol=1e-6, msg=f"{part} {name}")
    assert not torch.equal(a["model"]["model.lm_head.weight"], a["ema"]["model.lm_head.weight"])


def test_init_from_starts_from_a_saved_generator(tokens, tmp_path):
    torch.manual_seed(1)
    start = Generator.from_preset("tiny", codebook_size=1024, seq_len=16, num_classes=10)
    start.save_pretrained(tmp_path / "start")
    # Learning rate 0: one step leaves the weights (and so their average) where they started.
    r = recipe(
        tokens,
        f"init_from={tmp_path / 'start'}",
        "optimizer.learning_rate=0",
        "training.max_train_steps=1",
        "training.batch_size=4",
        "experiment.image_every=0",
    )
    exported = Generator.from_pretrained(train(GeneratorTask(r), output_dir=tmp_path / "run").export_dir)
    for name, value in start.state_dict().items():
        assert torch.equal(exported.state_dict()[name], value), name
    wide = tmp_path / "wide"
    Generator.from_preset("small", codebook_size=1024, seq_len=16, num_classes=10).save_pretrained(wide)
    with pytest.raises(ConfigError, match="init_from does not fit model"):
        train(GeneratorTask(recipe(tokens, f"init_from={wide}")), output_dir=tmp_path / "run2")


def test_token_stream_epochs_ranks_flips_and_resume():
    n, k = 10, 3
    data = TokenDataset(
        torch.arange(n)[:, None].repeat(1, k), -torch.arange(n)[:, None].repeat(1, k), torch.arange(n), {}
    )

    def first_indices(loader: TokenLoader, batches: int) -> torch.Tensor:
        stream = iter(loader)
        return torch.cat([next(stream)["index"] for _ in range(batches)])

    seen = [first_indices(TokenLoader(data, batch_size=4, seed=3, rank=r, world_size=2), 5) for r in range(2)]
    # Each rank reads 5 of the 10 samples per epoch, the two ranks disjoint; 20 = 4 epochs of 5.
    for epoch in range(4):
        part = [s[5 * epoch : 5 * epoch + 5] for s in seen]
        assert sorted(torch.cat(part).tolist()) == list(range(n))
    batch = next(iter(TokenLoader(data, batch_size=10, seed=3)))
    flipped = batch["tokens"][:, 0] < 0
    assert 0 < int(flipped.sum()) < 10  # some samples use the mirrored tokens
    assert torch.equal(batch["tokens"][:, 0].abs(), batch["index"]) and torch.equal(
        batch["label"], batch["index"]
    )
    assert not (next(iter(TokenLoader(data, batch_size=10, seed=3, flip=False)))["tokens"] < 0).any()
    # Resuming from a saved position continues with exactly the same batches.
    loader = TokenLoader(data, batch_size=4, seed=1)
    stream = iter(loader)
    for _ in range(3):
        next(stream)
    state = loader.state_dict()
    expected = [next(stream)["index"] for _ in range(4)]
    again = TokenLoader(data, batch_size=4, seed=1)
    again.load_state_dict(state)
    stream = iter(again)
    assert all(torch.equal(next(stream)["index"], e) for e in expected)
    with pytest.raises(DataError, match="seed was 1 when saved, now 2"):
        TokenLoader(data, batch_size=4, seed=2).load_state_dict(state)
    with pytest.raises(DataError, match="no flipped tokens"):
        TokenLoader(TokenDataset(data.tokens, None, data.labels, {}), batch_size=2)


def test_masked_token_loss_is_the_authors_weighted_cross_entropy():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 1, 0, 1]], dtype=torch.bool)
    loss, accuracy = masked_token_loss(logits, targets, mask, label_smoothing=0.1, unmasked_weight=0.1)
    per_token = torch.stack(
        [
            -(
                0.9 * F.log_softmax(logits[b, i], -1)[targets[b, i]]
                + 0.1 * F.log_softmax(logits[b, i], -1).mean()
            )
            for b in range(2)
            for i in range(5)
        ]
    ).view(2, 5)
    weights = torch.where(mask, 1.0, 0.1)
    torch.testing.assert_close(loss, (per_token * weights).sum() / weights.sum())
    hits = (logits.argmax(-1) == targets) & mask
    assert accuracy.item() == pytest.approx(hits.sum().item() / 5)
    plain, _ = masked_token_loss(logits, targets, mask, label_smoothing=0.0, unmasked_weight=1.0)
    torch.testing.assert_close(plain, F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1)))


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["model.depht=3"], ConfigError, "unknown key 'model.depht'"),
        (["model.seq_len=32"], ConfigError, "'model.seq_len' is 32 but the tokens .* have 16"),
        (
            ["model.num_classes=5", "model.class_names=null"],
            ConfigError,
            r"class labels up to \d but model.num_classes is 5",
        ),
        (["losses.quantizer_weight=1"], ConfigError, "unknown key 'losses.quantizer_weight'"),
        (
            ["losses.label_smoothing=2"],
            ConfigError,
            "'losses.label_smoothing' must be a number in \\[0, 1\\]",
        ),
        (["data.image_size=64"], ConfigError, "'data.image_size' does not apply to generator training"),
        (["model.tokenizer=/nowhere/tok"], ConfigError, "model.tokenizer: /nowhere/tok: no such file"),
        (["data.train=/nowhere"], DataError, "not a pretokenized folder"),
    ],
)
def test_recipe_errors_name_the_key(tokens, tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        train(
            GeneratorTask(recipe(tokens, "training.max_train_steps=1", *overrides)), output_dir=tmp_path / "r"
        )


def test_tokens_load_with_labels(tokens):
    data = load_tokens(tokens["tokens"])
    assert data.tokens.shape == (48, 16) and data.tokens_flip is not None
    assert int(data.labels.min()) >= 0 and int(data.labels.max()) <= 9
