"""MaskGIT masking schedule, training-time masking and confidence-based iterative decoding.

Token ids: ``[0, C)`` are image codes and ``C`` is the mask token (C = codebook size).

Decoding follows the TiTok authors' sampler so that their published sampling settings mean the
same here. Starting from an all-mask sequence of K tokens, step ``s`` of ``T`` (ratio
``r = (s + 1) / T``):

1. predict logits over the C codes at the masked positions, with classifier-free guidance when
   the step's guidance scale is nonzero (conditional and unconditional passes share one batch);
2. optionally divide the logits by ``0.5 + 0.8 * (1 - r)`` (softmax temperature annealing);
3. sample each masked position by Gumbel-max with temperature ``t = randomize_temperature * (1 - r)``;
4. score each new token by its logit plus ``t`` times fresh Gumbel noise (already fixed tokens
   score +inf) and re-mask the ``floor(K * arccos(r) / (pi / 2))`` lowest scores, at least one and
   fewer than the number masked before the step; after the last step nothing is re-masked.

Guidance scale of step ``s`` (``g`` = guidance scale):

* ``"constant"``: ``g``; logits = cond + (cond - uncond) * g;
* ``"linear"``: ``g * s / T`` (0 at the first step); logits = cond + (cond - uncond) * scale;
* ``"power-cosine"``: ``(g - 1) * (1 - cos(pi * (s / T) ** p)) / 2 + 1``;
  logits = uncond + (cond - uncond) * scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from titok.errors import TitokError

#: Guidance schedules understood by :func:`guidance_scale_at`.
GUIDANCE_SCHEDULES = ("constant", "linear", "power-cosine")

#: ``predict(ids [B, K], class_tokens [B], where [B, K] bool) -> logits [N, C]``, N = ``where.sum()``,
#: rows in row-major order of ``where``.
MaskedPredictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: Called after every decoding step with ``(step, ids [B, K])``; ``ids`` must not be modified.
StepCallback = Callable[[int, torch.Tensor], None]


@dataclass(frozen=True)
class SamplingSettings:
    """Settings of :func:`confidence_decode` (see the module docstring for their meaning).

    Attributes:
        num_steps: T, number of decoding steps (>= 1).
        guidance_scale: g (>= 0).
        guidance_schedule: one of :data:`GUIDANCE_SCHEDULES`.
        guidance_power: p of the ``"power-cosine"`` schedule.
        randomize_temperature: Gumbel temperature at the start, annealed linearly to 0 (>= 0).
        softmax_temperature_annealing: divide logits by ``0.5 + 0.8 * (1 - r)``.
    """

    num_steps: int
    guidance_scale: float
    guidance_schedule: str
    guidance_power: float = 3.0
    randomize_temperature: float = 0.0
    softmax_temperature_annealing: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise TitokError(f"num_steps must be a positive integer, got {self.num_steps!r}")
        for name in ("guidance_scale", "guidance_power", "randomize_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TitokError(f"{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise TitokError(f"guidance_scale must be >= 0, got {self.guidance_scale!r}")
        if self.guidance_schedule not in GUIDANCE_SCHEDULES:
            raise TitokError(
                f"guidance_schedule must be one of {', '.join(GUIDANCE_SCHEDULES)}, got {self.guidance_schedule!r}"
            )
        if not math.isfinite(self.guidance_power) or self.guidance_power <= 0:
            raise TitokError(f"guidance_power must be > 0, got {self.guidance_power!r}")
        if not math.isfinite(self.randomize_temperature) or self.randomize_temperature < 0:
            raise TitokError(f"randomize_temperature must be >= 0, got {self.randomize_temperature!r}")


def mask_ratio(t: float) -> float:
    """Arccos schedule: fraction of tokens masked at time ``t`` in [0, 1] (1 at t=0, 0 at t=1)."""
    return math.acos(t) / (math.pi / 2)


def tokens_to_remask(step: int, num_steps: int, seq_len: int) -> int:
    """``floor(K * arccos((step + 1) / T) / (pi / 2))``: tokens re-masked after ``step`` before clamping."""
    return math.floor(seq_len * mask_ratio((step + 1) / num_steps))


def guidance_scale_at(step: int, num_steps: int, scale: float, schedule: str, power: float = 3.0) -> float:
    """Guidance scale used at decoding step ``step`` (0-based) of ``num_steps``."""
    if schedule == "constant":
        return scale
    if schedule == "linear":
        return scale * step / num_steps
    if schedule == "power-cosine":
        ramp = (1.0 - math.cos(math.pi * (step / num_steps) ** power)) / 2.0
        return (scale - 1.0) * ramp + 1.0
    raise TitokError(f"guidance_schedule must be one of {', '.join(GUIDANCE_SCHEDULES)}, got {schedule!r}")


def random_masking(
    tokens: torch.Tensor, mask_token_id: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a random, arccos-scheduled number of positions per sequence, for training.

    Per sequence: ``t ~ U(0, 1)``, ratio ``arccos(t) / (pi / 2)`` clamped to [1e-6, 1], and
    ``round(K * ratio)`` (at least 1) positions chosen uniformly at random are replaced by
    ``mask_token_id``.

    Args:
        tokens: LongTensor [B, K] of codes.
        mask_token_id: the mask token id (the codebook size).
        generator: optional random generator (on the tokens' device).

    Returns:
        ``(masked_tokens [B, K], mask [B, K] bool)``, ``mask`` True where masked.
    """
    batch, seq_len = tokens.shape
    t = torch.rand(batch, device=tokens.device, generator=generator)
    ratio = (torch.acos(t) / (math.pi / 2)).clamp(1e-6, 1.0)
    num_masked = (seq_len * ratio).round().clamp(min=1)
    order = torch.rand(batch, seq_len, device=tokens.device, generator=generator).argsort(dim=-1)
    mask = order < num_masked[:, None]
    return tokens.masked_fill(mask, mask_token_id), mask


def gumbel_noise(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))``, u ~ U(0, 1), with both logs clamped at 1e-20 (float32)."""
    u = torch.rand(shape, generator=generator, device=device)
    return u.clamp_min_(1e-20).log_().neg_().clamp_min_(1e-20).log_().neg_()


def add_gumbel_noise(x: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """``x + temperature * gumbel_noise(x.shape)`` in float32, summed into the noise's own buffer."""
    return gumbel_noise(tuple(x.shape), generator, x.device).mul_(temperature).add_(x)


def confidence_decode(
    predict: MaskedPredictor,
    class_tokens: torch.Tensor,
    uncond_token: int,
    seq_len: int,
    mask_token_id: int,
    settings: SamplingSettings,
    generator: torch.Generator | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Iterative MaskGIT decoding from an all-mask sequence.

    Args:
        predict: the model at the masked positions (:data:`MaskedPredictor`).
        class_tokens: LongTensor [B], the condition token of each sequence.
        uncond_token: the "no class" token used for the unconditional guidance pass.
        seq_len: K, tokens per sequence.
        mask_token_id: id of the mask token (= number of codes C).
        settings: sampling settings.
        generator: random generator for the Gumbel noise (on ``class_tokens``' device).
        on_step: optional callback after each step.

    Returns:
        LongTensor [B, K] of codes in ``[0, C)``.
    """
    device = class_tokens.device
    batch = class_tokens.shape[0]
    steps = settings.num_steps
    ids = torch.full((batch, seq_len), mask_token_id, dtype=torch.long, device=device)
    both_tokens = torch.cat([class_tokens, torch.full_like(class_tokens, uncond_token)])

    for step in range(steps):
        ratio = (step + 1) / steps
        temperature = settings.randomize_temperature * (1.0 - ratio)
        is_mask = ids == mask_token_id
        scale = guidance_scale_at(
            step, steps, settings.guidance_scale, settings.guidance_schedule, settings.guidance_power
        )
        # power-cosine at scale 1 is uncond + (cond - uncond) = cond: the unconditional pass is not needed.
        guided = scale != 0.0 and not (settings.guidance_schedule == "power-cosine" and scale == 1.0)
        if guided:
            both = predict(torch.cat([ids, ids]), both_tokens, torch.cat([is_mask, is_mask]))
            cond, uncond = both.chunk(2)
            base = uncond if settings.guidance_schedule == "power-cosine" else cond
            logits = torch.sub(cond, uncond).mul_(scale).add_(base)  # base + (cond - uncond) * scale
        else:
            logits = predict(ids, class_tokens, is_mask)
        if settings.softmax_temperature_annealing:
            logits = logits / (0.5 + 0.8 * (1.0 - ratio))

        noisy = add_gumbel_noise(logits, temperature, generator) if temperature > 0 else logits
        sampled = noisy.argmax(dim=-1)
        filled = ids.clone()
        filled[is_mask] = sampled
        if step == steps - 1:
            ids = filled
        else:
            score = logits.gather(-1, sampled[:, None]).squeeze(-1).float()
            if temperature > 0:
                score = add_gumbel_noise(score, temperature, generator)
            confidence = torch.full((batch, seq_len), math.inf, device=device)
            confidence[is_mask] = score
            num_masked = is_mask.sum(dim=-1, keepdim=True)
            remask = (num_masked - 1).clamp(max=tokens_to_remask(step, steps, seq_len)).clamp(min=1)
            rank = confidence.argsort(dim=-1).argsort(dim=-1)
            ids = filled.masked_fill(rank < remask, mask_token_id)
        if on_step is not None:
            on_step(step, ids)
    return ids
