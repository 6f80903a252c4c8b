"""Fetching files from the Hugging Face hub, with offline use and clear failures.

Files come from the local hub cache when present (so ``HF_HUB_OFFLINE=1`` works once a file has
been downloaded), otherwise from the hub. Without network, a missing file is a
:class:`CheckpointError` that says what to download and where to put it.
"""

from __future__ import annotations

from pathlib import Path

from titok.errors import CheckpointError


def hub_file_url(repo_id: str, filename: str, revision: str = "main") -> str:
    """The direct download address of ``filename`` in a hub model repo."""
    return f"https://huggingface.co/{repo_id}/resolve/{revision}/{filename}"


def download(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """Return a local path to ``filename`` of hub repo ``repo_id``, downloading it if needed.

    Raises :class:`CheckpointError` naming the repo, the file, its URL and the cache folder
    when the file is neither cached nor downloadable (offline mode, no network, no such repo).
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    cached = cached_or_none(repo_id, filename) if revision is None else None
    if cached is None and not constants.HF_HUB_OFFLINE and not hub_reachable(constants.ENDPOINT):
        raise _unreachable(repo_id, filename, revision)  # fail in seconds, not after the hub's retries
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except LocalEntryNotFoundError as exc:
        raise _unreachable(repo_id, filename, revision) from exc
    except (RepositoryNotFoundError, EntryNotFoundError) as exc:
        raise CheckpointError(
            f"hub repo {repo_id!r} has no file {filename!r}: {exc.__class__.__name__}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - connection failures of any kind end here
        raise _unreachable(repo_id, filename, revision) from exc


def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's host opens within ``timeout`` seconds (True behind a
    proxy, which this check cannot see through: the download then decides)."""
    import os
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _unreachable(repo_id: str, filename: str, revision: str | None) -> CheckpointError:
    from huggingface_hub import constants

    offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else " (the hub cannot be reached)"
    return CheckpointError(
        f"cannot get {filename!r} from hub repo {repo_id!r}{offline}: not in the local cache "
        f"({constants.HF_HUB_CACHE}) and not downloadable here. Download "
        f"{hub_file_url(repo_id, filename, revision or 'main')} on a machine with network and either "
        f"pass its local path (or the folder holding it with its config.json) as the model, "
        f"or copy the repo into the cache with `hf download {repo_id}`."
    )


def cached_or_none(repo_id: str, filename: str) -> Path | None:
    """The cached path of a hub file if it is in the local cache, without any network access."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=repo_id, filename=filename)
    return Path(found) if isinstance(found, str) else None


__all__ = ["cached_or_none", "download", "hub_file_url", "hub_reachable"]
