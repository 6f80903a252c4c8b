"""Choosing the feature network of FID and IS from a ``--feature-net`` value.

* ``"inception"``: the standard FID Inception-v3 (TF 2015-12-05 weights, pytorch-fid input
  convention), name ``"inception-v3-2015-12-05"``; ``"inception-tf"`` uses the TensorFlow input
  convention. Weights come from ``inception_weights`` or the torch hub cache
  (``<torch hub dir>/checkpoints/pt_inception-2015-12-05-6726825d.pth``); when they are missing
  and cannot be downloaded the error names the URL and the path to put the file at;
* a ``.pth``/``.pt`` file: Inception weights at that path;
* a folder written by ``titok train classifier``: that classifier
  (:class:`titok.models.classifier.Classifier`), named by its config (e.g.
  ``"imagenette64-resnet"``).

Metrics are labelled with :attr:`name`; :func:`network_fingerprint` additionally identifies the
exact weights, so statistics from two differently trained networks of the same name are told apart.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from titok.errors import CheckpointError
from titok.metrics.inception import load_fid_inception
from titok.models.classifier import is_classifier_folder, load_classifier

#: ``--feature-net`` values naming the standard Inception network.
INCEPTION_SPECS = {"inception": "pytorch-fid", "inception-tf": "tensorflow"}
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def resolve_feature_network(
    spec: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    inception_weights: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> nn.Module:
    """The feature network named by ``spec`` (see the module docstring), in eval mode on ``device``.

    Args:
        spec: ``"inception"``, ``"inception-tf"``, an Inception weights file or a classifier folder.
        device: where to put the network.
        inception_weights: local Inception weights file for ``"inception"``/``"inception-tf"``.
        download: allow downloading the Inception weights into the torch hub cache.

    Raises:
        CheckpointError: unknown spec, missing/unloadable weights (offline: names what to
            download and where to put it).
    """
    text = str(spec)
    if text in INCEPTION_SPECS:
        return load_fid_inception(
            inception_weights, download=download, device=device, preprocessing=INCEPTION_SPECS[text]
        )
    path = Path(text).expanduser()
    if path.is_dir():
        if not is_classifier_folder(path):
            raise CheckpointError(
                f"{path}: not a classifier folder (config.json with kind 'classifier'; "
                "train one with `titok train classifier`)"
            )
        return load_classifier(path, device=device)
    if path.is_file() and path.suffix in _WEIGHT_SUFFIXES:
        return load_fid_inception(path, download=False, device=device)
    raise CheckpointError(
        f"--feature-net {text!r}: expected 'inception', 'inception-tf', an Inception weights file "
        "or a classifier folder written by `titok train classifier`"
    )


def network_fingerprint(network: nn.Module) -> str:
    """Short hash (16 hex digits) of a network's name, parameter names, shapes and values."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(str(getattr(network, "name", type(network).__name__)).encode())
    for key, value in sorted(network.state_dict().items()):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{key}:{tensor.dtype}:{list(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


__all__ = ["INCEPTION_SPECS", "network_fingerprint", "resolve_feature_network"]
