"""The FID Inception-v3: architecture, the FID/IS pipeline with random weights, weight-file loading."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

from titok.errors import CheckpointError
from titok.metrics import (
    FeatureAccumulator,
    FeatureNetwork,
    generation_metrics,
    load_reference_stats,
    save_reference_stats,
)
from titok.metrics.inception import (
    FID_INCEPTION_NAME,
    FID_INCEPTION_TF_NAME,
    FID_WEIGHTS_ALTERNATIVE_FILENAMES,
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_URL,
    FIDInceptionV3,
    fid_weights_cache_path,
    load_fid_inception,
    resize_bilinear_tf1,
)

#: Inception-v3 without the auxiliary head has 23,834,568 parameters with 1000 classes;
#: the FID network's 1008-way classifier adds 8 * 2049.
EXPECTED_PARAMETERS = 23_834_568 + 8 * 2049


@pytest.fixture(scope="module")
def random_inception() -> FIDInceptionV3:
    """The network with He-initialised convolutions, so random activations stay O(1)."""
    torch.manual_seed(0)
    model = FIDInceptionV3()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.eval().requires_grad_(False)


def test_architecture_matches_the_published_names_and_shapes(random_inception: FIDInceptionV3) -> None:
    state = random_inception.state_dict()
    assert sum(p.numel() for p in random_inception.parameters()) == EXPECTED_PARAMETERS
    assert sum(name.endswith(".bn.running_var") for name in state) == 94  # one per convolution
    expected_shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_mean": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for name, shape in expected_shapes.items():
        assert tuple(state[name].shape) == shape, name
    assert not any("AuxLogits" in name for name in state)
    assert random_inception.Mixed_7b.pool == "avg" and random_inception.Mixed_7c.pool == "max"


def test_random_weights_run_through_the_whole_fid_pipeline(
    random_inception: FIDInceptionV3, tmp_path
) -> None:
    assert isinstance(random_inception, FeatureNetwork) and random_inception.name == FID_INCEPTION_NAME
    gen = torch.Generator().manual_seed(0)
    accumulator = FeatureAccumulator(random_inception)
    accumulator.update(torch.rand(1, 3, 48, 48, generator=gen))  # resized to 299 x 299 inside
    accumulator.update(torch.rand(1, 3, 64, 40, generator=gen))
    summary = accumulator.compute()
    assert summary.stats.mu.shape == (2048,) and summary.stats.sigma.shape == (2048, 2048)
    assert summary.probs.shape == (2, 1008)
    assert float(summary.stats.sigma.trace()) > 0

    path = save_reference_stats(summary.stats, tmp_path / "reference.npz")
    reference = load_reference_stats(path, feature_network=FID_INCEPTION_NAME)
    results = generation_metrics(summary, reference, is_splits=2, fid_method="eigh")
    assert set(results) == {f"{m}[{FID_INCEPTION_NAME}]" for m in ("FID", "IS", "IS_std")}
    # ~0 up to the square roots of round-off eigenvalues of the rank-1 covariance.
    assert abs(results[f"FID[{FID_INCEPTION_NAME}]"]) < 1e-4 * float(summary.stats.sigma.trace())
    assert results[f"IS[{FID_INCEPTION_NAME}]"] >= 1.0


def test_logits_leave_out_the_bias_unless_asked(random_inception: FIDInceptionV3) -> None:
    images = torch.rand(2, 3, 75, 75, generator=torch.Generator().manual_seed(1))
    random_inception.resize_to = None  # smallest input the network accepts, to keep this cheap
    try:
        features, logits = random_inception(images)
        random_inception.logits_bias = True
        _, biased = random_inception(images)
    finally:
        random_inception.resize_to, random_inception.logits_bias = 299, False
    weight, bias = random_inception.fc.weight, random_inception.fc.bias
    assert torch.allclose(logits, features @ weight.T, atol=1e-5)
    assert torch.allclose(biased, logits + bias, atol=1e-5)


def test_tensorflow_bilinear_resize_samples_at_dst_times_in_over_out() -> None:
    row = torch.tensor([[[[0.0, 10.0]]]]).expand(1, 1, 2, 2)  # columns 0 and 10
    up = resize_bilinear_tf1(row, 4)  # source columns 0, 0.5, 1, 1.5 (clamped to the edge)
    assert torch.equal(up[0, 0, 0], torch.tensor([0.0, 5.0, 10.0, 10.0]))
    image = torch.rand(1, 3, 7, 7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(resize_bilinear_tf1(image, 7), image)  # same size: identity
    down = resize_bilinear_tf1(torch.arange(16.0).view(1, 1, 4, 4), 2)  # samples rows/cols 0 and 2
    assert torch.equal(down[0, 0], torch.tensor([[0.0, 2.0], [8.0, 10.0]]))


def test_tensorflow_preprocessing_has_its_own_name_and_quantises_to_8_bits(random_inception) -> None:
    tf_net = FIDInceptionV3(resize_to=None, preprocessing="tensorflow")
    tf_net.load_state_dict(random_inception.state_dict())
    tf_net.eval().requires_grad_(False)
    assert tf_net.name == FID_INCEPTION_TF_NAME != random_inception.name
    images = torch.rand(1, 3, 75, 75, generator=torch.Generator().manual_seed(4))
    quantised = torch.floor(images * 255) / 255
    features, _ = tf_net(images)
    assert torch.equal(features, tf_net(quantised + 0.1 / 255)[0])  # same 8-bit pixels -> same features
    random_inception.resize_to = None
    try:
        assert not torch.allclose(features, random_inception(images)[0])  # (v - 128) / 128 != 2 x - 1
    finally:
        random_inception.resize_to = 299
    with pytest.raises(ValueError, match="preprocessing"):
        FIDInceptionV3(preprocessing="pil")  # type: ignore[arg-type]


def _published_style_file(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """A weights file as published: every parameter/statistic, no batch counters, legacy pickle."""
    gen = torch.Generator().manual_seed(2)
    state = {
        name: torch.rand(tensor.shape, generator=gen)
        for name, tensor in model.state_dict().items()
        if not name.endswith("num_batches_tracked")
    }
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return state


def test_published_format_file_loads_from_path_and_hub_cache(
    random_inception: FIDInceptionV3, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / FID_WEIGHTS_FILENAME
    state = _published_style_file(random_inception, path)
    model = load_fid_inception(path, download=False)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for name in ("Conv2d_1a_3x3.conv.weight", "Mixed_6c.branch7x7_2.bn.running_var", "fc.bias"):
        assert torch.equal(model.state_dict()[name], state[name]), name

    # Found in the torch hub cache, also under the alternative published file name.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = fid_weights_cache_path().parent / FID_WEIGHTS_ALTERNATIVE_FILENAMES[0]
    assert fid_weights_cache_path() == tmp_path / "torch" / "hub" / "checkpoints" / FID_WEIGHTS_FILENAME
    cached.parent.mkdir(parents=True)
    path.rename(cached)
    from_cache = load_fid_inception(download=False)
    assert torch.equal(from_cache.fc.weight, state["fc.weight"])


def test_a_file_of_another_network_is_refused(tmp_path) -> None:
    path = tmp_path / "not_inception.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048), "head.bias": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="missing .*unexpected 1: head.bias.*mis-shaped 1: fc.weight"):
        load_fid_inception(path, download=False)


def test_missing_weights_offline_name_the_url_and_the_path(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = str(tmp_path / "hub" / "checkpoints" / FID_WEIGHTS_FILENAME)

    with pytest.raises(CheckpointError) as disabled:
        load_fid_inception(download=False)
    assert FID_WEIGHTS_URL in str(disabled.value) and target in str(disabled.value)

    def offline(url: str, dst: str, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError, match="download failed") as failed:
        load_fid_inception()
    assert FID_WEIGHTS_URL in str(failed.value) and target in str(failed.value)

    with pytest.raises(CheckpointError, match="no such FID Inception weights file") as missing:
        load_fid_inception(tmp_path / "nowhere.pth")
    assert FID_WEIGHTS_URL in str(missing.value)
