"""The BERT generator (``arch="bert"``): the authors' ``ImageBert``, used for L-32 and B-64.

A Hugging Face ``BertModel`` without pooler under ``model.`` (word, position and token-type
embeddings, post-norm layers, LayerNorm eps 1e-12) and ``model.lm_head``, with the exact
parameter names of the authors' checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from titok.models.generator.config import GeneratorConfig
from titok.models.generator.model import Generator
from titok.precision import cast_for_autocast


class _BertEmbeddings(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.seq_len + config.num_condition_ids, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(2, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] -> [B, L, H]; every token has token type 0."""
        length = ids.shape[1]
        position_and_type = self.position_embeddings.weight[:length] + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(self.word_embeddings(ids) + position_and_type))


class _BertSelfAttention(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.heads = config.heads
        self.attn_dropout = config.attn_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, H] -> attention context [B, L, H]."""
        b, length, width = x.shape
        shape = (b, length, self.heads, width // self.heads)
        x = cast_for_autocast(x)  # once for the three projections (autocast would cast it thrice)
        q = self.query(x).view(shape).transpose(1, 2)
        k = self.key(x).view(shape).transpose(1, 2)
        v = self.value(x).view(shape).transpose(1, 2)
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return out.transpose(1, 2).reshape(b, length, width)


class _BertResidualOutput(nn.Module):
    """``LayerNorm(dropout(dense(x)) + residual)``."""

    def __init__(self, in_features: int, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _BertAttention(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.self = _BertSelfAttention(config)
        self.output = _BertResidualOutput(config.hidden_size, config.hidden_size, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x), x)


class _BertIntermediate(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _BertLayer(nn.Module):
    """Post-norm transformer layer: attention, then GELU MLP, each followed by LayerNorm(x + f(x))."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.attention = _BertAttention(config)
        self.intermediate = _BertIntermediate(config)
        self.output = _BertResidualOutput(config.intermediate_size, config.hidden_size, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(x)
        return self.output(self.intermediate(x), x)


class _BertEncoder(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_BertLayer(config) for _ in range(config.depth))


class _BertBackbone(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.embeddings = _BertEmbeddings(config)
        self.encoder = _BertEncoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.codebook_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x)
        return x


class BertGenerator(Generator, arch="bert"):
    """The authors' ``ImageBert``: a BERT encoder (``model.*``) with ``model.lm_head``."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__(config)
        self.model = _BertBackbone(config)
        self.apply(_init_bert)

    def code_head(self) -> nn.Linear:
        return self.model.lm_head

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)


def _init_bert(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
