"""Training on token prefixes: the decoder sees only the first k of the K tokens.

With the recipe's ``prefix`` section enabled, each training step draws prefix lengths k in
[1, K] and the decoder reads only the first k quantized tokens of each image (the rest are
hidden as the model's ``hidden_tail`` says). Since the first tokens must then carry the image on
their own, the encoder learns to order its tokens coarse-to-fine and any prefix decodes to an
image (nested dropout; FlexTok, One-D-Piece and Semanticist train this way).

Lengths come from a random generator seeded by ``(seed, step, process)``: the same step draws
the same lengths after a resume, with no random state to save, and processes draw different
ones. The choices (per sample or per batch; uniform, powers of two or a mix; a share of full
length; a warm-up at full length) are named options, measured in docs/learning.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from titok.errors import ConfigError
from titok.models.prefixes import powers_of_two

#: How the prefix length is shared: one per image or one per (per-process) batch.
PER = ("sample", "batch")
#: The length distributions: uniform in 1..K, uniform over the powers of two up to K (and K),
#: or each of those half of the time.
DISTRIBUTIONS = ("uniform", "pow2", "mix")


@dataclass
class PrefixSection:
    """The recipe's ``prefix`` section (off by default: every step decodes all K tokens).

    Attributes:
        enabled: train on prefixes; the exported model's config says ``variable_length: true``.
        per: "sample" (each image its own k) or "batch" (one k per batch and process). The
            generator mode always draws one k per batch (its sequences are cut to k).
        distribution: "uniform" (k in 1..K), "pow2" (k in {1, 2, 4, ..., K}) or "mix".
        full_share: probability that a draw is K itself, on top of the distribution.
        warmup_steps: steps at full length before prefixes start.
        with_full: decode every image twice per step, from its drawn prefix and from all K
            tokens, and average the two losses (nested losses, as Matryoshka representations
            train): the full length is trained at every step without taking draws from the
            prefixes, for one more decoder pass per step. TiTok modes only.
    """

    enabled: bool = False
    per: str = "sample"
    distribution: str = "uniform"
    full_share: float = 0.0
    warmup_steps: int = 0
    with_full: bool = False

    def check(self, source: str) -> None:
        """Raise :class:`ConfigError` naming the first bad key of ``source``."""
        if self.per not in PER:
            raise ConfigError(f"{source}: 'prefix.per' must be one of {PER}, got {self.per!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(
                f"{source}: 'prefix.distribution' must be one of {DISTRIBUTIONS}, got {self.distribution!r}"
            )
        if not 0.0 <= self.full_share <= 1.0:
            raise ConfigError(f"{source}: 'prefix.full_share' must be in [0, 1], got {self.full_share}")
        if self.warmup_steps < 0:
            raise ConfigError(f"{source}: 'prefix.warmup_steps' must be >= 0, got {self.warmup_steps}")


def _draw(distribution: str, num_tokens: int, n: int, gen: torch.Generator) -> torch.Tensor:
    uniform = torch.randint(1, num_tokens + 1, (n,), generator=gen)
    pow2 = torch.tensor(powers_of_two(num_tokens))
    pow2 = pow2[torch.randint(len(pow2), (n,), generator=gen)]
    if distribution == "uniform":
        return uniform
    if distribution == "pow2":
        return pow2
    return torch.where(torch.rand(n, generator=gen) < 0.5, uniform, pow2)


def draw_lengths(
    section: PrefixSection,
    num_tokens: int,
    batch_size: int,
    step: int,
    seed: int,
    process_index: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """Prefix lengths (B,) for one training step, or None where the step decodes all K tokens.

    With ``section.with_full`` the lengths are (2B,): the drawn ones, then K for every image
    (:meth:`titok.models.titok.TiTok.forward` decodes each image once per group of B).
    None when the section is off or during its warm-up. Deterministic in
    ``(seed, step, process_index)``, drawn on the CPU (the same numbers on every device).
    """
    if not section.enabled or step < section.warmup_steps:
        return None
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step) * 4096 + process_index)
    n = batch_size if section.per == "sample" else 1
    lengths = _draw(section.distribution, num_tokens, n, gen)
    if section.full_share > 0:
        lengths = torch.where(torch.rand(n, generator=gen) < section.full_share, num_tokens, lengths)
    lengths = lengths.expand(batch_size) if n == 1 else lengths
    if section.with_full:
        lengths = torch.cat([lengths, torch.full((batch_size,), num_tokens, dtype=lengths.dtype)])
    return lengths.to(device)


def repeat_for_copies(targets: torch.Tensor, count: int) -> torch.Tensor:
    """``targets`` (B, ...) repeated to (count, ...) to match an output of ``count`` = m*B rows,
    copy-major as :meth:`titok.models.titok.TiTok.forward` decodes them (``with_full``: m = 2);
    returned as it is when ``count`` is B."""
    if count == targets.shape[0]:
        return targets
    return targets.repeat(count // targets.shape[0], *([1] * (targets.dim() - 1)))


def prefix_preview_rows(
    model: nn.Module, images: torch.Tensor, decode: Callable[..., torch.Tensor]
) -> list[torch.Tensor]:
    """Preview rows: ``decode(images)`` for a fixed-length model; for a variable-length one,
    ``decode(images, num_tokens=k)`` for k = 1, 2, 4, ..., K (coarse to fine)."""
    if not model.config.variable_length:
        return [decode(images)]
    return [decode(images, num_tokens=k) for k in powers_of_two(model.config.num_latent_tokens)]
