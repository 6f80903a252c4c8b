"""Checkpoints: the authors' published format loads strictly; ours round-trips; offline use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import put_in_hub_cache
from tests.test_models import PUBLISHED
from titok import TiTok
from titok.errors import CheckpointError
from titok.loading import load_vqgan
from titok.models import tokenizer_config
from titok.models.vqgan import VQGAN, VQGANConfig


def _light_state_dict(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of the given shapes, each tensor one random value broadcast (cheap to store)."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(1, generator=g).expand(*s) if s else torch.randn((), generator=g)
        for k, s in shapes.items()
    }


def _authors_config(vq_model: dict) -> dict:
    return {
        "experiment": {"project": "titok", "name": "test"},
        "model": {"vq_model": vq_model},
        "dataset": {"preprocessing": {"crop_size": 256}},
    }


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_authors_format_loads_strictly(preset: str, reference: dict, tmp_path: Path) -> None:
    entry = reference[f"tokenizer/{PUBLISHED[preset]}"]
    state = _light_state_dict(entry["state_dict"])
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_authors_config(entry["config"])))
    torch.save(state, folder / "pytorch_model.bin")
    model = TiTok.from_pretrained(folder)
    assert model.config == tokenizer_config(preset)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for name in ("latent_tokens", "encoder.conv_out.weight", "decoder.ffn.0.weight"):
        assert torch.equal(loaded[name], state[name])


def test_authors_safetensors_hub_format_loads_and_runs(reference: dict, tmp_path: Path) -> None:
    """A full random-valued published S-128 checkpoint in hub form (safetensors) loads and decodes."""
    entry = reference["tokenizer/titok_s128"]
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(*s, generator=g) * 0.02 for k, s in entry["state_dict"].items()}
    folder = tmp_path / "s128"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_authors_config(entry["config"])))
    save_file(state, str(folder / "model.safetensors"))
    model = TiTok.from_pretrained(folder)
    assert torch.equal(
        model.state_dict()["pixel_decoder.conv_out.weight"], state["pixel_decoder.conv_out.weight"]
    )
    tokens = torch.randint(0, 4096, (1, 128))
    assert model.decode(tokens).shape == (1, 3, 256, 256)


def test_raw_state_dict_with_preset(reference: dict, tmp_path: Path) -> None:
    state = _light_state_dict(reference["tokenizer/titok_b64"]["state_dict"])
    path = tmp_path / "tokenizer_titok_b64.bin"
    torch.save(state, path)
    model = TiTok.from_pretrained(path, preset="titok-b64")
    assert torch.equal(model.state_dict()["quantize.embedding.weight"], state["quantize.embedding.weight"])
    with pytest.raises(CheckpointError, match="needs a preset"):
        TiTok.from_pretrained(path)


def test_misshaped_and_missing_tensors_are_refused_by_name(reference: dict, tmp_path: Path) -> None:
    shapes = dict(reference["tokenizer/titok_s128"]["state_dict"])
    shapes["encoder.conv_out.weight"] = [13, 512, 1, 1]
    state = _light_state_dict(shapes)
    del state["decoder.ln_post.bias"]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "bad.bin"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        TiTok.from_pretrained(path, preset="titok-s128")
    msg = str(err.value)
    assert "encoder.conv_out.weight (expected [12, 512, 1, 1], got [13, 512, 1, 1])" in msg
    assert "missing 1: decoder.ln_post.bias" in msg
    assert "unexpected 1: extra.weight" in msg
    assert str(path) in msg


def test_save_pretrained_round_trip_is_exact(tmp_path: Path) -> None:
    model = TiTok.from_preset("titok-tiny-32").eval()
    images = torch.rand(4, 3, 32, 32)
    model.save_pretrained(tmp_path / "m")
    again = TiTok.from_pretrained(tmp_path / "m")
    assert again.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    t1, t2 = model.encode(images), again.encode(images)
    assert torch.equal(t1, t2)
    assert torch.equal(model.decode(t1), again.decode(t2))


def test_round_trip_vae_and_vqgan_head(tmp_path: Path) -> None:
    for overrides in ({"quantize_mode": "vae"}, {"decoder_head": "vqgan", "legacy_layout": True}):
        model = TiTok.from_preset("titok-tiny-32", **overrides).eval()
        model.save_pretrained(tmp_path / str(len(overrides)) / overrides.get("quantize_mode", "vq"))
        again = TiTok.from_pretrained(tmp_path / str(len(overrides)) / overrides.get("quantize_mode", "vq"))
        x = torch.rand(2, 3, 32, 32)
        assert torch.equal(model.reconstruct(x), again.reconstruct(x))


def test_preset_loads_from_hub_cache_offline(reference: dict, offline_hub: Path) -> None:
    entry = reference["tokenizer/titok_s128"]
    state = _light_state_dict(entry["state_dict"], seed=3)
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    put_in_hub_cache(
        offline_hub,
        "yucornetto/tokenizer_titok_s128_imagenet",
        {
            "config.json": json.dumps(_authors_config(entry["config"])).encode(),
            "pytorch_model.bin": buf.getvalue(),
        },
    )
    model = TiTok.from_pretrained("titok-s128")
    assert torch.equal(model.state_dict()["latent_tokens"], state["latent_tokens"])
    model = TiTok.from_pretrained("yucornetto/tokenizer_titok_s128_imagenet")
    assert model.config.num_latent_tokens == 128


def test_raw_file_in_hub_cache_is_used_offline(reference: dict, offline_hub: Path) -> None:
    import io

    state = _light_state_dict(reference["tokenizer/titok_l32"]["state_dict"], seed=5)
    buf = io.BytesIO()
    torch.save(state, buf)
    put_in_hub_cache(offline_hub, "fun-research/TiTok", {"tokenizer_titok_l32.bin": buf.getvalue()})
    model = TiTok.from_pretrained("titok-l32")
    assert torch.equal(model.state_dict()["latent_tokens"], state["latent_tokens"])


def test_offline_without_cache_names_repo_file_and_place(offline_hub: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        TiTok.from_pretrained("titok-l32")
    msg = str(err.value)
    assert "yucornetto/tokenizer_titok_l32_imagenet" in msg
    assert "https://huggingface.co/yucornetto/tokenizer_titok_l32_imagenet/resolve/main/config.json" in msg
    assert "tokenizer_titok_l32.bin" in msg  # the raw-file alternative
    assert str(offline_hub) in msg


def test_unknown_names_and_unpublished_presets(offline_hub: Path) -> None:
    with pytest.raises(CheckpointError, match="unknown model"):
        TiTok.from_pretrained("no-such-model")
    with pytest.raises(CheckpointError, match="no published weights"):
        TiTok.from_pretrained("titok-tiny-32")
    with pytest.raises(CheckpointError, match="no such file"):
        TiTok.from_pretrained("./missing/model.safetensors")


def test_published_vqgan_loads_from_file_and_offline_error(
    reference: dict, tmp_path: Path, offline_hub: Path
) -> None:
    state = _light_state_dict(reference["vqgan/maskgit-vqgan-imagenet-f16-256"]["state_dict"])
    path = tmp_path / "maskgit-vqgan-imagenet-f16-256.bin"
    torch.save(state, path)
    vq = load_vqgan(path)
    assert torch.equal(vq.quantize.embedding.weight, state["quantize.embedding.weight"])
    with pytest.raises(CheckpointError, match="maskgit-vqgan-imagenet-f16-256.bin"):
        load_vqgan()


def test_bin_files_are_read_with_weights_only(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # noqa: D105
            return (print, ("executed",))

    path = tmp_path / "evil.bin"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot read weights"):
        TiTok.from_pretrained(path, preset="titok-tiny-32")


def test_vqgan_save_and_load_folder(tmp_path: Path) -> None:
    from titok.loading import save_model

    cfg = VQGANConfig(
        channel_mult=(1, 2), hidden_channels=32, num_res_blocks=1, z_channels=8, codebook_size=16
    )
    vq = VQGAN(cfg)
    save_model(vq, tmp_path / "vq", kind="vqgan", config=cfg.to_dict())
    again = load_vqgan(tmp_path / "vq")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(vq.encode(x), again.encode(x))
    (tmp_path / "vq" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: cannot read JSON config"):
        load_vqgan(tmp_path / "vq")


def test_a_config_value_of_the_wrong_type_names_file_and_key(tmp_path: Path) -> None:
    """A hand-edited config.json with a wrong-typed value is refused by key, not inside a layer."""
    TiTok.from_preset("titok-tiny-32").save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    data = json.loads(path.read_text())
    data["config"]["encoder_width"] = "wide"
    path.write_text(json.dumps(data))
    with pytest.raises(
        CheckpointError, match=r"config\.json: 'config\.encoder_width' expects int, got 'wide'"
    ):
        TiTok.from_pretrained(tmp_path / "m")
    data["config"]["encoder_width"] = 64
    data["config"]["pixel_decoder"]["channel_mult"] = [1, "2"]
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"'config\.pixel_decoder\.channel_mult' expects list of int"):
        TiTok.from_pretrained(tmp_path / "m")

    cfg = VQGANConfig(
        channel_mult=(1, 2), hidden_channels=32, num_res_blocks=1, z_channels=8, codebook_size=16
    )
    from titok.loading import save_model

    save_model(VQGAN(cfg), tmp_path / "vq", kind="vqgan", config={**cfg.to_dict(), "z_channels": 8.5})
    with pytest.raises(CheckpointError, match=r"vq/config\.json: 'config\.z_channels' expects int, got 8\.5"):
        load_vqgan(tmp_path / "vq")

    from titok.loading import generator_config_from_json

    path = tmp_path / "generator.json"
    path.write_text(json.dumps({"library": "titok", "kind": "generator", "config": {"depth": "deep"}}))
    with pytest.raises(CheckpointError, match=r"generator\.json: 'config\.depth' expects int, got 'deep'"):
        generator_config_from_json(path)


def test_a_folder_of_another_kind_or_no_json_object_is_refused(tmp_path: Path) -> None:
    """The lookup shared by tokenizers and generators tells the kinds apart and names the file."""
    from titok.loading import config_from_json, generator_config_from_json

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"library": "titok", "kind": "generator", "config": {}}))
    with pytest.raises(CheckpointError, match="holds a 'generator', not a tokenizer"):
        config_from_json(path)
    path.write_text("[1, 2]")
    for read in (config_from_json, generator_config_from_json):
        with pytest.raises(CheckpointError, match="expected a JSON object"):
            read(path)


@pytest.mark.parametrize(
    "old",
    [
        "titok.checkpoints",
        "titok.hub",
        "titok.pretrained",
        "titok.tokenizer_files",
        "titok.models.generator.pretrained",
    ],
)
def test_old_module_paths_re_export_titok_loading(old: str) -> None:
    """The modules loading moved out of still hand out the very same objects (kept for one release)."""
    import importlib

    import titok.loading
    import titok.resources

    module = importlib.import_module(old)
    assert module.__all__
    for name in module.__all__:
        home = titok.loading if hasattr(titok.loading, name) else titok.resources
        new = getattr(home, name)
        assert getattr(module, name) is new, f"{old}.{name}"
