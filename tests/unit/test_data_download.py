from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from recflow.data import download_movielens, read_movielens_100k
from recflow.data.download import ARCHIVES
from recflow.errors import DataSourceError


def _zip(tmp_path: Path, members: dict[str, str], name: str = "ml-100k.zip") -> tuple[str, str]:
    path = tmp_path / "served" / name
    path.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in members.items():
            zf.writestr(member, text)
    return path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()


ML100K = {
    "ml-100k/u.data": "1\t10\t4\t881250949\n",
    "ml-100k/u.item": "10|Toy Story (1995)|d||u|0|1\n",
    "ml-100k/u.genre": "unknown|0\nComedy|1\n",
    "ml-100k/README": "tiny fixture\n",
}


def test_downloads_verifies_extracts_and_then_uses_cache(tmp_path: Path) -> None:
    url, digest = _zip(tmp_path, ML100K)
    cache = tmp_path / "cache"
    folder = download_movielens("ml-100k", cache, url=url, sha256=digest)
    assert folder == cache / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["README", "u.data", "u.genre", "u.item"]
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k"]  # the zip is not kept
    ds = read_movielens_100k(folder)
    assert ds.items["genres"].tolist() == ["Comedy"]

    # Second call: no download (the URL is gone now) and the same folder.
    (tmp_path / "served" / "ml-100k.zip").unlink()
    assert download_movielens("ml-100k", cache, url=url, sha256=digest) == folder


def test_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    url, _ = _zip(tmp_path, ML100K)
    cache = tmp_path / "cache"
    with pytest.raises(DataSourceError, match=r"expected sha256 0{64}, found [0-9a-f]{64}"):
        download_movielens("ml-100k", cache, url=url, sha256="0" * 64)
    assert list(cache.iterdir()) == []


def test_default_checksum_guards_custom_urls(tmp_path: Path) -> None:
    # A mirror must serve the official bytes: without sha256 the known checksum applies.
    url, _ = _zip(tmp_path, ML100K)
    with pytest.raises(DataSourceError, match=ARCHIVES["ml-100k"].sha256):
        download_movielens("ml-100k", tmp_path / "cache", url=url)


def test_archive_without_expected_files_is_rejected(tmp_path: Path) -> None:
    url, digest = _zip(tmp_path, {"other/readme.txt": "hi"}, name="ml-1m.zip")
    cache = tmp_path / "cache"
    with pytest.raises(DataSourceError, match=r"expected ratings\.dat"):
        download_movielens("ml-1m", cache, url=url, sha256=digest)
    assert list(cache.iterdir()) == []


def test_unsafe_member_is_refused(tmp_path: Path) -> None:
    url, digest = _zip(tmp_path, {"../evil.txt": "x", "ml-100k/u.data": ""})
    cache = tmp_path / "cache"
    with pytest.raises(DataSourceError, match="unsafe archive member"):
        download_movielens("ml-100k", cache, url=url, sha256=digest)
    assert list(cache.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_not_a_zip_and_unreachable_url(tmp_path: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip")
    digest = hashlib.sha256(b"not a zip").hexdigest()
    with pytest.raises(DataSourceError, match="not a valid zip"):
        download_movielens("ml-100k", tmp_path / "cache", url=fake.as_uri(), sha256=digest)
    with pytest.raises(DataSourceError, match="could not download.*file:///"):
        download_movielens("ml-100k", tmp_path / "cache", url=(tmp_path / "none.zip").as_uri())
    assert list((tmp_path / "cache").iterdir()) == []


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"expected one of \['ml-100k', 'ml-1m'\]"):
        download_movielens("ml-25m", tmp_path)
