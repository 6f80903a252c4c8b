"""Small generators and inputs shared by the generator tests, and the published generators'
entries in the reference file."""

from __future__ import annotations

import torch

from titok.models.generator import Generator

PUBLISHED = {
    "titok-l32": "generator/titok_l32",
    "titok-b64": "generator/titok_b64",
    "titok-s128": "generator/titok_s128",
}
C, K, N = 32, 6, 7


def small(preset: str = "tiny", **kw) -> Generator:
    torch.manual_seed(0)
    model = Generator.from_preset(
        preset, codebook_size=C, seq_len=K, num_classes=N, dropout=0.0, attn_dropout=0.0, **kw
    )
    with torch.no_grad():  # move LayerNorms and biases off their trivial initial values
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def tokens_and_labels(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, C + 1, (batch, K), generator=g), torch.randint(0, N, (batch,), generator=g)
