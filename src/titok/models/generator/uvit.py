"""The U-ViT generator (``arch="uvit"``): the authors' ``UViTBert``, used for S-128.

Pre-norm blocks with long skip connections (``in_blocks``, ``mid_block``, ``out_blocks``),
``norm`` and ``lm_head``, with the exact parameter names of the authors' checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from titok.models.generator.config import GeneratorConfig
from titok.models.generator.model import Generator


class _UViTAttention(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.heads = config.heads
        self.attn_dropout = config.attn_dropout
        self.proj_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, H] -> [B, L, H]; the fused projection is laid out (3, heads, head_dim)."""
        b, length, width = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, length, width)))


class _UViTMlp(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class _UViTBlock(nn.Module):
    """``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``, after ``skip_linear(cat[x, skip])`` if skipping."""

    def __init__(self, config: GeneratorConfig, skip: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size)
        self.attn = _UViTAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size)
        self.mlp = _UViTMlp(config)
        self.skip_linear = nn.Linear(2 * config.hidden_size, config.hidden_size) if skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            assert skip is not None
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------------------------------


class UViTGenerator(Generator, arch="uvit"):
    """The authors' ``UViTBert``: embeddings, ``depth // 2`` in-blocks, a middle block, ``depth // 2``
    out-blocks taking the in-blocks' outputs in reverse order, final LayerNorm and ``lm_head``."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__(config)
        half = config.depth // 2
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, config.seq_len + config.num_condition_ids, config.hidden_size)
        )
        self.in_blocks = nn.ModuleList(_UViTBlock(config) for _ in range(half))
        self.mid_block = _UViTBlock(config)
        self.out_blocks = nn.ModuleList(_UViTBlock(config, skip=True) for _ in range(half))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.codebook_size)
        self.apply(_init_uvit)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def code_head(self) -> nn.Linear:
        return self.lm_head

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids) + self.pos_embed[:, : ids.shape[1]]
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        return self.norm(x)


def _init_uvit(m: nn.Module) -> None:
    if isinstance(m, nn.Linear | nn.Embedding):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
