"""Prefix lengths of a 1D token sequence: the k of "the first k tokens"."""

from __future__ import annotations

from titok.errors import TitokError


def check_num_tokens(num_tokens: object, max_tokens: int) -> int:
    """``num_tokens`` as a prefix length of a ``max_tokens``-token sequence: an int in [1, K], or a
    :class:`TitokError` naming the range (the rule of ``TiTok`` and ``Generator`` alike)."""
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or not 1 <= num_tokens <= max_tokens:
        raise TitokError(f"num_tokens must be an integer in [1, {max_tokens}], got {num_tokens!r}")
    return num_tokens


def powers_of_two(num_tokens: int) -> list[int]:
    """1, 2, 4, ... below ``num_tokens``, then ``num_tokens`` itself: [1, 2, 4, ..., K].

    The lengths of a coarse-to-fine strip, of the ``pow2`` training distribution and of the
    evaluation curves.
    """
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    out = [1]
    while out[-1] * 2 < num_tokens:
        out.append(out[-1] * 2)
    if out[-1] != num_tokens:
        out.append(num_tokens)
    return out
