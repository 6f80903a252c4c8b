"""Masking schedule, training masking and the iterative decoder, on small synthetic predictors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from titok.errors import TitokError
from titok.sampling import (
    SamplingSettings,
    confidence_decode,
    guidance_scale_at,
    mask_ratio,
    random_masking,
    tokens_to_remask,
)

C, K, NUM_CLASSES = 16, 12, 5
MASK, NO_CLASS = C, C + NUM_CLASSES + 1


class ToyModel:
    """A deterministic 'model': logits depend on position, condition token and the current ids."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.position = torch.randn(K, C, generator=g)
        self.condition = torch.randn(C + NUM_CLASSES + 2, C, generator=g) * 2
        self.context = torch.randn(C + 1, C, generator=g)
        self.batch_sizes: list[int] = []

    def full_logits(self, ids: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """[B, K, C]"""
        context = torch.nn.functional.one_hot(ids, C + 1).float().mean(1) @ self.context
        return self.position[None] + self.condition[cls][:, None] + context[:, None]

    def predict(self, ids: torch.Tensor, cls: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(ids.shape[0])
        return self.full_logits(ids, cls)[where]


def reference_decode(model: ToyModel, cls: torch.Tensor, s: SamplingSettings) -> torch.Tensor:
    """The published algorithm written out on full [B, K, C] logits, for zero temperature."""
    assert s.randomize_temperature == 0
    ids = torch.full((cls.shape[0], K), MASK)
    uncond = torch.full_like(cls, NO_CLASS)
    cfg = s.guidance_scale if s.guidance_schedule == "constant" else 0.0
    for step in range(s.num_steps):
        ratio = (step + 1) / s.num_steps
        is_mask = ids == MASK
        if s.guidance_schedule == "power-cosine":
            cfg = (s.guidance_scale - 1) * (
                1 - math.cos(((step / s.num_steps) ** s.guidance_power) * math.pi)
            ) / 2 + 1
        if cfg != 0:
            c, u = model.full_logits(ids, cls), model.full_logits(ids, uncond)
            logits = (u if s.guidance_schedule == "power-cosine" else c) + (c - u) * cfg
        else:
            logits = model.full_logits(ids, cls)
        if s.softmax_temperature_annealing:
            logits = logits / (0.5 + 0.8 * (1 - ratio))
        sampled = logits.argmax(-1)
        sampled_logits = logits.gather(-1, sampled[..., None])[..., 0]
        sampled = torch.where(is_mask, sampled, ids)
        confidence = torch.where(is_mask, sampled_logits, torch.tensor(np.inf))
        mask_len = np.floor(K * np.arccos(ratio) / (np.pi * 0.5))
        mask_len = int(max(1, min(int(is_mask.sum(-1)[0]) - 1, mask_len)))
        cut_off = confidence.sort(-1).values[:, mask_len - 1 : mask_len]
        ids = sampled if step == s.num_steps - 1 else torch.where(confidence <= cut_off, MASK, sampled)
        if s.guidance_schedule == "linear":
            cfg = ratio * s.guidance_scale
    return ids


def test_mask_ratio_values():
    assert mask_ratio(0.0) == pytest.approx(1.0)
    assert mask_ratio(1.0) == pytest.approx(0.0)
    assert mask_ratio(0.5) == pytest.approx(2 / 3)
    assert [tokens_to_remask(s, 8, 32) for s in range(8)] == [29, 26, 24, 21, 18, 14, 10, 0]


def test_guidance_schedules():
    assert [guidance_scale_at(s, 4, 2.0, "constant") for s in range(4)] == [2.0] * 4
    assert [guidance_scale_at(s, 4, 2.0, "linear") for s in range(4)] == [0.0, 0.5, 1.0, 1.5]
    pc = [guidance_scale_at(s, 8, 6.9, "power-cosine", 3.0) for s in range(8)]
    assert pc[0] == 1.0 and all(a < b for a, b in zip(pc, pc[1:], strict=False)) and pc[-1] < 6.9
    assert guidance_scale_at(2, 4, 5.0, "power-cosine", 1.0) == pytest.approx(3.0)  # half-way: (5-1)/2+1
    with pytest.raises(TitokError, match="guidance_schedule"):
        guidance_scale_at(0, 4, 1.0, "cosine")


def test_random_masking_counts_and_values():
    tokens = torch.randint(0, C, (4000, K))
    masked, mask = random_masking(tokens, MASK, torch.Generator().manual_seed(0))
    assert torch.equal(masked[mask], torch.full_like(masked[mask], MASK))
    assert torch.equal(masked[~mask], tokens[~mask])
    counts = mask.sum(1)
    assert counts.min() >= 1 and counts.max() <= K
    # E[arccos(U) / (pi/2)] = 2/pi
    assert counts.float().mean().item() / K == pytest.approx(2 / math.pi, abs=0.02)
    again, _ = random_masking(tokens, MASK, torch.Generator().manual_seed(0))
    assert torch.equal(masked, again)


@pytest.mark.parametrize("steps", [8, 40])  # 40 > K: the last masked token keeps being re-masked
def test_decode_invariants_fixed_tokens_never_change(steps):
    model = ToyModel()
    states: list[torch.Tensor] = []
    settings = SamplingSettings(steps, 3.0, "linear", randomize_temperature=4.5)
    cls = torch.tensor([C + 1, C + 3, C + 5])
    out = confidence_decode(
        model.predict,
        cls,
        NO_CLASS,
        K,
        MASK,
        settings,
        torch.Generator().manual_seed(1),
        on_step=lambda s, ids: states.append(ids.clone()),
    )
    assert len(states) == steps and torch.equal(states[-1], out)
    assert (out != MASK).all() and out.min() >= 0 and out.max() < C
    previous = torch.full_like(out, MASK)
    for step, ids in enumerate(states):
        fixed = previous != MASK
        assert torch.equal(ids[fixed], previous[fixed]), f"a fixed token changed at step {step}"
        if step < steps - 1:
            expected = max(1, min(int((previous == MASK).sum(1)[0]) - 1, tokens_to_remask(step, steps, K)))
            assert ((ids == MASK).sum(1) == expected).all()
        previous = ids
    if steps > K:
        assert ((states[-2] == MASK).sum(1) == 1).all()
    # first step unguided (linear schedule starts at 0), then cond + uncond in one batch
    assert model.batch_sizes == [3] + [6] * (steps - 1)


def test_same_seed_same_tokens_and_seeds_differ():
    model = ToyModel()
    settings = SamplingSettings(6, 2.0, "constant", randomize_temperature=8.0)
    cls = torch.full((4,), C + 2)

    def run(seed: int) -> torch.Tensor:
        return confidence_decode(
            model.predict, cls, NO_CLASS, K, MASK, settings, torch.Generator().manual_seed(seed)
        )

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


@pytest.mark.parametrize(
    "settings",
    [
        SamplingSettings(8, 4.5, "linear"),
        SamplingSettings(5, 2.0, "constant", softmax_temperature_annealing=True),
        SamplingSettings(12, 6.9, "power-cosine", guidance_power=3.0),
        SamplingSettings(20, 1.5, "constant"),  # more steps than tokens to re-mask: the clamps matter
    ],
)
def test_matches_published_algorithm_at_zero_temperature(settings):
    model = ToyModel(seed=2)
    cls = torch.tensor([C + 1, C + 2, C + 4, NO_CLASS])
    ours = confidence_decode(model.predict, cls, NO_CLASS, K, MASK, settings)
    assert torch.equal(ours, reference_decode(model, cls, settings))


def test_zero_constant_guidance_is_a_single_conditional_pass():
    cls = torch.tensor([C + 1, C + 2])
    plain = ToyModel(seed=5)
    out = confidence_decode(plain.predict, cls, NO_CLASS, K, MASK, SamplingSettings(6, 0.0, "constant"))
    assert plain.batch_sizes == [2] * 6
    assert torch.equal(out, reference_decode(plain, cls, SamplingSettings(6, 0.0, "constant")))
    # with temperature: identical to a linear schedule at scale 0, which never guides either
    a = confidence_decode(
        plain.predict,
        cls,
        NO_CLASS,
        K,
        MASK,
        SamplingSettings(6, 0.0, "constant", randomize_temperature=3.0),
        torch.Generator().manual_seed(0),
    )
    b = confidence_decode(
        plain.predict,
        cls,
        NO_CLASS,
        K,
        MASK,
        SamplingSettings(6, 0.0, "linear", randomize_temperature=3.0),
        torch.Generator().manual_seed(0),
    )
    assert torch.equal(a, b)


def test_power_cosine_first_step_needs_no_unconditional_pass():
    model = ToyModel()
    confidence_decode(
        model.predict, torch.tensor([C + 1]), NO_CLASS, K, MASK, SamplingSettings(4, 3.0, "power-cosine")
    )
    assert model.batch_sizes == [1, 2, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_steps": 0}, "num_steps"),
        ({"num_steps": -3}, "num_steps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"guidance_schedule": "cosine"}, "guidance_schedule"),
        ({"randomize_temperature": -0.5}, "randomize_temperature"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    base = {"num_steps": 8, "guidance_scale": 1.0, "guidance_schedule": "linear"}
    with pytest.raises(TitokError, match=message):
        SamplingSettings(**{**base, **kwargs})
