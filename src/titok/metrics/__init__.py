"""Evaluation metrics: FID, Inception Score, PSNR, SSIM and codebook usage.

FID and IS are always reported together with the name of the feature network that produced
them (see :mod:`titok.metrics.feature_stats`).
"""

from titok.metrics.codebook import codebook_usage, token_counts, usage_from_counts
from titok.metrics.feature_stats import (
    FeatureAccumulator,
    FeatureNetwork,
    FeatureSummary,
    generation_metrics,
    metric_key,
)
from titok.metrics.frechet import (
    GaussianAccumulator,
    GaussianStats,
    fid_between,
    frechet_distance,
    load_reference_stats,
    save_reference_stats,
)
from titok.metrics.image_quality import psnr, ssim
from titok.metrics.inception import (
    FID_INCEPTION_NAME,
    FID_INCEPTION_TF_NAME,
    FID_WEIGHTS_URL,
    FIDInceptionV3,
    fid_weights_cache_path,
    find_fid_weights,
    load_fid_inception,
)
from titok.metrics.inception_score import inception_score

__all__ = [
    "FID_INCEPTION_NAME",
    "FID_INCEPTION_TF_NAME",
    "FID_WEIGHTS_URL",
    "FIDInceptionV3",
    "FeatureAccumulator",
    "FeatureNetwork",
    "FeatureSummary",
    "GaussianAccumulator",
    "GaussianStats",
    "codebook_usage",
    "fid_between",
    "fid_weights_cache_path",
    "find_fid_weights",
    "frechet_distance",
    "generation_metrics",
    "inception_score",
    "load_fid_inception",
    "load_reference_stats",
    "metric_key",
    "psnr",
    "save_reference_stats",
    "ssim",
    "token_counts",
    "usage_from_counts",
]
