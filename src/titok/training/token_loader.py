"""Endless batches of pretokenized sequences for generator training, resumable exactly.

The data is a :class:`~titok.pretokenize.TokenDataset` held in memory (K int64 codes per image:
ImageNet-1k at K = 128 takes 1.3 GB, twice that with the mirrored images' tokens). Epoch ``e`` visits every sample once in the order ``randperm(N)`` drawn from a generator
seeded with ``(seed, e)``; process ``r`` of ``W`` takes positions ``r, r + W, ...`` of it, and
batches run on across epoch ends. With ``flip``, each position of an epoch also draws (from the
same generator) whether to use the tokens of the mirrored image, the token-level form of a
random horizontal flip. Everything is a function of ``(seed, epoch, position)``, so the state is
just ``(epoch, offset)`` and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch

from titok.errors import DataError
from titok.pretokenize import TokenDataset


class TokenLoader:
    """Batches ``{"tokens": (B, K) long, "label": (B,) long, "index": (B,) long}`` on the CPU.

    Args:
        data: tokens, flipped tokens and labels.
        batch_size: sequences per batch.
        seed: seed of the epoch orders and flip choices (the same on every process).
        rank: this process.
        world_size: number of processes.
        flip: use ``tokens_flip`` for a random half of the samples (needs flipped tokens).
    """

    def __init__(
        self,
        data: TokenDataset,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        flip: bool = True,
    ) -> None:
        if flip and data.tokens_flip is None:
            raise DataError(
                "the pretokenized data holds no flipped tokens (made with --no-flip): set augment off"
            )
        if len(data) < world_size:
            raise DataError(f"{len(data)} samples cannot be shared by {world_size} processes")
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.flip = flip
        self.epoch = 0
        self.offset = 0  # samples of this process's share of ``epoch`` already used
        #: Damaged samples skipped, per kind (always empty: tokens are checked when loaded).
        self.skipped: Counter[str] = Counter()
        self._cached: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's sample indices of ``epoch`` and whether each is flipped."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1], self._cached[2]
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        order = torch.randperm(len(self.data), generator=g)
        flips = torch.rand(len(self.data), generator=g) < 0.5
        indices, flipped = order[self.rank :: self.world_size], flips[self.rank :: self.world_size]
        self._cached = (epoch, indices, flipped & self.flip)
        return indices, self._cached[2]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            parts: list[tuple[torch.Tensor, torch.Tensor]] = []
            need = self.batch_size
            while need:
                indices, flipped = self._epoch_plan(self.epoch)
                take = min(need, len(indices) - self.offset)
                parts.append(
                    (indices[self.offset : self.offset + take], flipped[self.offset : self.offset + take])
                )
                self.offset += take
                need -= take
                if self.offset == len(indices):
                    self.epoch, self.offset = self.epoch + 1, 0
            index = torch.cat([p[0] for p in parts])
            flipped = torch.cat([p[1] for p in parts])
            tokens = self.data.tokens[index]
            if flipped.any():
                assert self.data.tokens_flip is not None
                tokens[flipped] = self.data.tokens_flip[index[flipped]]
            yield {"tokens": tokens, "label": self.data.labels[index], "index": index}

    def state_dict(self) -> dict[str, Any]:
        """Position of this process: ``{"epoch", "offset"}`` plus the settings it depends on."""
        return {
            "epoch": self.epoch,
            "offset": self.offset,
            "seed": self.seed,
            "world_size": self.world_size,
            "count": len(self.data),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; the data, seed and process count must be the same."""
        for key, now in (("seed", self.seed), ("world_size", self.world_size), ("count", len(self.data))):
            if int(state.get(key, now)) != now:
                raise DataError(
                    f"cannot resume the token stream: {key} was {state.get(key)} when saved, now {now}"
                )
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
