"""The seam score: how much a patch-wise decoder's block grid shows.

A ViT decoder writes each ``patch`` x ``patch`` block of the image from its own token, so at small
scale the block borders show as a grid. The score is the mean absolute step between neighbouring
pixels across block borders over the mean step between neighbours inside blocks (rows and
columns together). Natural images score about 1 (Imagenette at 64 px: 1.02); a visible grid
scores higher (the built-in ``imagenette64`` before decoder fine-tuning: 1.28).
"""

from __future__ import annotations

import torch


class SeamScore:
    """Accumulates border and interior pixel steps over batches; :meth:`compute` gives the ratio.

    Args:
        patch: block side (the decoder's patch size).
    """

    def __init__(self, patch: int) -> None:
        if patch < 2:
            raise ValueError(f"seam score needs blocks of at least 2 pixels, got patch {patch}")
        self.patch = patch
        self.border_sum = 0.0
        self.border_count = 0
        self.inside_sum = 0.0
        self.inside_count = 0

    def update(self, images: torch.Tensor) -> None:
        """Add (B, C, H, W) images (any range; [0, 1] as elsewhere)."""
        if images.dim() != 4:
            raise ValueError(f"expected (B, C, H, W) images, got shape {list(images.shape)}")
        x = images.detach().float()
        for dim in (-1, -2):  # steps along rows, then along columns
            steps = x.diff(dim=dim).abs()
            n = steps.shape[dim]
            # Step j joins pixels j and j + 1: a border when j + 1 is a multiple of the patch side.
            border = (torch.arange(n, device=x.device) + 1) % self.patch == 0
            border = (border if dim == -1 else border[:, None]).expand_as(steps)
            self.border_sum += float(steps[border].sum())
            self.border_count += int(border.sum())
            self.inside_sum += float(steps[~border].sum())
            self.inside_count += int((~border).sum())

    def compute(self) -> float:
        """Mean border step / mean interior step (NaN before any update or on flat images)."""
        if not self.border_count or not self.inside_count or self.inside_sum == 0:
            return float("nan")
        return (self.border_sum / self.border_count) / (self.inside_sum / self.inside_count)


def seam_score(images: torch.Tensor, patch: int) -> float:
    """Seam score of one batch of (B, C, H, W) images (see the module docstring)."""
    score = SeamScore(patch)
    score.update(images)
    return score.compute()
