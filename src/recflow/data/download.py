"""Fetch a MovieLens archive once, verify its sha256 and extract it atomically into a cache."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from recflow.errors import DataSourceError
from recflow.storage import atomic_directory


@dataclass(frozen=True)
class _Archive:
    url: str
    sha256: str
    marker: str  # a file the extracted folder must contain


# sha256 of the GroupLens zips as recorded by TensorFlow Datasets
# (tensorflow_datasets/url_checksums/movielens.txt).
ARCHIVES: dict[str, _Archive] = {
    "ml-100k": _Archive(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        marker="u.data",
    ),
    "ml-1m": _Archive(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        marker="ratings.dat",
    ),
}

_CHUNK = 1 << 20


def _fetch(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` into ``dest``; return the sha256 of what was written."""
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, dest.open("wb") as out:
            while chunk := resp.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DataSourceError(
            f"could not download {url} ({exc}); without network access, fetch the zip "
            "elsewhere and pass url='file:///path/to/archive.zip'"
        ) from None
    return h.hexdigest()


def _extract(archive: Path, into: Path, url: str) -> None:
    """Extract members, dropping the archive's single top-level folder (e.g. 'ml-100k/')."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            tops = {PurePosixPath(m.filename).parts[0] for m in members}
            strip = len(tops) == 1 and all(
                len(PurePosixPath(m.filename).parts) > 1 for m in members
            )
            for m in members:
                parts = PurePosixPath(m.filename).parts[1 if strip else 0 :]
                if not parts or m.filename.startswith("/") or ".." in parts:
                    raise DataSourceError(
                        f"{url}: refusing unsafe archive member {m.filename!r}; "
                        "expected relative paths inside the archive"
                    )
                target = into.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
    except zipfile.BadZipFile as exc:
        raise DataSourceError(f"{url}: not a valid zip archive ({exc})") from None


def download_movielens(
    name: str,
    cache_dir: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    timeout: float = 120.0,
) -> Path:
    """Return ``cache_dir/name``, the extracted folder, downloading it on first use.

    ``url`` defaults to GroupLens; ``sha256`` defaults to the known checksum of the official
    archive (a mirror must serve identical bytes). A checksum mismatch raises DataSourceError
    and leaves nothing in the cache. Any ``file://`` URL works, for machines without network.
    """
    if name not in ARCHIVES:
        raise DataSourceError(
            f"MovieLens archive: expected one of {sorted(ARCHIVES)}, found {name!r}"
        )
    spec = ARCHIVES[name]
    cache_dir = Path(cache_dir)
    final = cache_dir / name
    if (final / spec.marker).is_file():
        return final  # extraction is atomic, so an existing folder is complete

    url = url or spec.url
    expected = (sha256 or spec.sha256).lower()
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.zip.", dir=cache_dir)
    os.close(fd)
    archive = Path(tmp)
    try:
        found = _fetch(url, archive, timeout)
        if found != expected:
            raise DataSourceError(
                f"{url}: expected sha256 {expected}, found {found}; the download is corrupt "
                "or not the expected archive: check the URL, or pass the right sha256"
            )
        with atomic_directory(final) as scratch:
            _extract(archive, scratch, url)
            if not (scratch / spec.marker).is_file():
                raise DataSourceError(
                    f"{url}: expected {spec.marker} in the archive, found "
                    f"{sorted(p.name for p in scratch.iterdir())}; is this the {name} archive?"
                )
    finally:
        with contextlib.suppress(FileNotFoundError):
            archive.unlink()
    return final
