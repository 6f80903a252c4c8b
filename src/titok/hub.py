"""Hugging Face hub downloads: moved to :mod:`titok.loading.hub`; kept for one release."""

from titok.loading.hub import cached_or_none, download, hub_file_url, hub_reachable

__all__ = ["cached_or_none", "download", "hub_file_url", "hub_reachable"]
