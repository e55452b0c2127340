"""Keyed pseudonyms: deterministic per key, unlinkable without it, key never leaves its place."""

from __future__ import annotations

import hashlib
import hmac
import stat

import pandas as pd
import pytest

from recflow import privacy
from recflow.errors import ConfigError
from recflow.types import Dataset

pytestmark = pytest.mark.unit

KEY = b"0123456789abcdef0123456789abcdef"


def test_pseudonym_is_truncated_hmac_sha256_with_prefix() -> None:
    expected = "p_" + hmac.new(KEY, b"alice", hashlib.sha256).hexdigest()[:24]
    assert privacy.pseudonymise_one("alice", KEY) == expected
    assert privacy.is_pseudonym(expected)
    assert not privacy.is_pseudonym("alice")


def test_same_id_same_pseudonym_other_key_other_pseudonym() -> None:
    a = privacy.pseudonymise(["u1", "u2", "u1"], KEY)
    assert a[0] == a[2] != a[1]
    assert privacy.pseudonymise(["u1"], b"another-key-of-enough-bytes!")[0] != a[0]


def test_environment_key_wins_and_short_keys_are_refused(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(privacy.KEY_ENV, "k" * 40)
    assert privacy.load_key(tmp_path) == b"k" * 40
    assert not (tmp_path / privacy.KEY_FILE).exists()
    monkeypatch.setenv(privacy.KEY_ENV, "short")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        privacy.load_key(tmp_path)


def test_demo_key_is_generated_once_with_private_permissions(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=privacy.KEY_ENV):
        privacy.load_key(tmp_path, create=False)
    key = privacy.load_key(tmp_path)
    path = tmp_path / privacy.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert privacy.load_key(tmp_path) == key  # stable across calls
    logged = capsys.readouterr()
    assert "generated a local demo key" in logged.err
    assert key.decode() not in logged.out + logged.err  # announced, never printed


def test_dataset_user_ids_are_replaced_and_nulls_kept() -> None:
    inter = pd.DataFrame(
        {"user_id": pd.array(["alice", None, "bob"], dtype="string"), "item_id": ["1", "2", "3"]}
    )
    users = pd.DataFrame({"user_id": pd.array(["alice", "bob"], dtype="string"), "age": [30, 40]})
    out = privacy.pseudonymise_dataset(Dataset(inter, pd.DataFrame(), users), KEY)
    assert out.interactions["user_id"].isna().tolist() == [False, True, False]
    assert out.interactions["user_id"][0] == privacy.pseudonymise_one("alice", KEY)
    assert out.users is not None
    assert set(out.users["user_id"]) == set(privacy.pseudonymise(["alice", "bob"], KEY))
    assert "alice" not in out.interactions["user_id"].astype(str).tolist()
