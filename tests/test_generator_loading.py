"""Generator loading: the published checkpoints and the authors' folder format, raw state-dict
files, save/load round trips, folder and config errors and the offline download message."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.generator_fixtures import PUBLISHED, C, K, N, small, tokens_and_labels
from titok.errors import CheckpointError, ConfigError
from titok.models.generator import (
    GENERATOR_PRESETS,
    Generator,
    generator_config_from_json,
    generator_from_state_dict,
)
from titok.models.generator import model as generator_module

# -- published format ----------------------------------------------------------------------------------


def authors_config_json(entry: dict) -> dict:
    generator = dict(entry["config"])
    generator["image_seq_len"] = "${model.vq_model.num_latent_tokens}"  # as their saved configs may hold
    return {
        "experiment": {"generator_checkpoint": "generator.bin"},
        "model": {
            "vq_model": {
                "codebook_size": entry["codebook_size"],
                "num_latent_tokens": entry["config"]["image_seq_len"],
            },
            "generator": generator,
        },
        "dataset": {"preprocessing": {"crop_size": 256}},
    }


def reference_state(entry: dict) -> dict[str, torch.Tensor]:
    # Uninitialised storage: no page is touched until read, so even the 295M model is instant.
    return {name: torch.empty(shape) for name, shape in entry["state_dict"].items()}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_checkpoints_load_strictly(reference, tmp_path, name):
    entry = reference[PUBLISHED[name]]
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(authors_config_json(entry)))
    config = generator_config_from_json(config_path)
    assert config == GENERATOR_PRESETS[name].config
    state = reference_state(entry)
    model = generator_from_state_dict(config, state, "published")
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(loaded[k].data_ptr() == state[k].data_ptr() for k in state)  # assigned, not copied
    assert not model.training


def test_misshaped_or_missing_tensor_is_refused(reference):
    entry = reference["generator/titok_l32"]
    config = GENERATOR_PRESETS["titok-l32"].config
    state = reference_state(entry)
    del state["model.encoder.layer.3.output.dense.bias"]
    with pytest.raises(CheckpointError, match=r"missing 1: model\.encoder\.layer\.3\.output\.dense\.bias"):
        generator_from_state_dict(config, state, "l32.bin")
    state = reference_state(entry)
    state["model.lm_head.weight"] = torch.empty(4095, 768)
    with pytest.raises(
        CheckpointError,
        match=r"l32\.bin.*model\.lm_head\.weight \(expected \[4096, 768\], got \[4095, 768\]\)",
    ):
        generator_from_state_dict(config, state, "l32.bin")
    s128 = reference_state(reference["generator/titok_s128"])
    with pytest.raises(CheckpointError, match="missing"):
        generator_from_state_dict(config, s128, "s128 weights as l32")


def test_raw_file_name_gives_the_preset(reference, tmp_path, monkeypatch):
    path = tmp_path / "generator_titok_b64.bin"
    path.write_bytes(b"")
    monkeypatch.setattr(
        generator_module, "read_state_dict", lambda p: reference_state(reference["generator/titok_b64"])
    )
    model = Generator.from_pretrained(path)
    assert model.config == GENERATOR_PRESETS["titok-b64"].config
    other = tmp_path / "weights.bin"
    other.write_bytes(b"")
    with pytest.raises(CheckpointError, match="needs a preset"):
        Generator.from_pretrained(other)


def test_authors_folder_format_loads_small_model(tmp_path):
    model = small()
    c = model.config
    generator = {
        "model_type": "ViT",
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.depth,
        "num_attention_heads": c.heads,
        "intermediate_size": c.intermediate_size,
        "dropout": 0.1,
        "attn_drop": 0.1,
        "num_steps": 5,
        "class_label_dropout": 0.1,
        "image_seq_len": "${model.vq_model.num_latent_tokens}",
        "condition_num_classes": N,
        "randomize_temperature": 2.0,
        "guidance_scale": 1.5,
        "guidance_decay": "constant",
    }
    cfg = {
        "experiment": {},
        "model": {"vq_model": {"codebook_size": C, "num_latent_tokens": K}, "generator": generator},
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    loaded = Generator.from_pretrained(tmp_path)
    assert (loaded.config.num_steps, loaded.config.guidance_scale, loaded.config.guidance_schedule) == (
        5,
        1.5,
        "constant",
    )
    tokens, labels = tokens_and_labels()
    with torch.no_grad():
        assert torch.equal(loaded(tokens, labels), model(tokens, labels))


def test_raw_bin_with_preset_and_index_buffers(tmp_path):
    torch.manual_seed(0)
    model = Generator.from_preset("tiny").eval()
    state = dict(model.state_dict())
    state["model.embeddings.position_ids"] = torch.arange(33)[None]
    torch.save(state, tmp_path / "gen.bin")
    loaded = Generator.from_pretrained(tmp_path / "gen.bin", preset="tiny")
    tokens = torch.randint(0, 4097, (2, 32))
    with torch.no_grad():
        assert torch.equal(loaded(tokens, torch.tensor([5, 900])), model(tokens, torch.tensor([5, 900])))
    state["model.embeddings.position_ids"] = torch.arange(33)[None].flip(1)
    torch.save(state, tmp_path / "bad.bin")
    with pytest.raises(CheckpointError, match="position_ids"):
        Generator.from_pretrained(tmp_path / "bad.bin", preset="tiny")


@pytest.mark.parametrize("preset", ["tiny", "tiny-uvit"])
def test_save_pretrained_round_trip(tmp_path, preset):
    model = small(preset, guidance_scale=2.5, num_steps=6)
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (meta["library"], meta["kind"]) == ("titok", "generator")
    loaded = Generator.from_pretrained(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    tokens, labels = tokens_and_labels()
    with torch.no_grad():
        assert torch.equal(loaded(tokens, labels), model(tokens, labels))
    assert torch.equal(loaded.generate([1, 2], seed=0), model.generate([1, 2], seed=0))


def test_folder_and_config_errors(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"library": "titok", "kind": "generator", "config": {"depht": 2}})
    )
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unknown key.*depht"):
        Generator.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"library": "titok", "kind": "tokenizer", "config": {}}))
    with pytest.raises(CheckpointError, match="not a generator"):
        Generator.from_pretrained(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no weights file"):
        Generator.from_pretrained(empty)
    with pytest.raises(CheckpointError, match="no such file"):
        Generator.from_pretrained(tmp_path / "missing" / "model.safetensors")
    with pytest.raises(ConfigError, match="titok-l32"):
        Generator.from_preset("titok-l23")
    with pytest.raises(ConfigError, match="heads"):
        Generator.from_preset("tiny", heads=3)
    with pytest.raises(CheckpointError, match="no published weights"):
        Generator.from_pretrained("tiny")


def test_offline_download_error_names_what_to_get(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError) as info:
        Generator.from_pretrained("titok-l32")
    message = str(info.value)
    assert "yucornetto/generator_titok_l32_imagenet" in message and "generator_titok_l32.bin" in message
    with pytest.raises(CheckpointError, match="fun-research/TiTok"):
        Generator.from_pretrained("titok-b64", raw=True)
    with pytest.raises(CheckpointError, match="no raw state-dict file"):
        Generator.from_pretrained("titok-s128", raw=True)
