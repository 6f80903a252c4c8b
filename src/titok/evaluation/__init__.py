"""Evaluation procedures built on frozen features and the metrics of :mod:`titok.metrics`."""

from titok.evaluation.linear_probe import (
    LinearProbeConfig,
    LinearProbeResult,
    linear_probe,
    pool_tokens,
)

__all__ = ["LinearProbeConfig", "LinearProbeResult", "linear_probe", "pool_tokens"]
