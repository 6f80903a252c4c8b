"""User-facing error types.

Every error a user can cause (bad file, bad config, missing download) derives from
:class:`TitokError`. The command-line interface prints such errors as one line and exits
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TitokError(Exception):
    """Base class of errors caused by user input or environment, not by a bug."""


class CheckpointError(TitokError):
    """A checkpoint cannot be found, downloaded, or does not match the model."""


class ImageError(TitokError):
    """An image file cannot be read or decoded."""


class ConfigError(TitokError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


class DataError(TitokError):
    """A dataset path or pattern is missing or empty."""
