"""Pseudonymous user ids: a keyed hash (HMAC-SHA256) applied before anything is written.

The platform never stores, logs or serves a raw user id. Ingest replaces every user id with
``p_<first 24 hex digits of HMAC-SHA256(key, id)>`` before the first write; the client library
applies the same function to the ids an application passes, so the model only ever sees
pseudonyms. Without the key a pseudonym cannot be linked back to a person (a plain hash could:
ids are guessable, so anyone could hash candidates and compare).

Where the key comes from, first match wins:
1. the environment variable ``RECFLOW_PSEUDONYM_KEY`` (production: a secret injected by the
   deployment, the same value in the pipeline and in the applications that call the client);
2. the Airflow Variable ``recflow_pseudonym_key`` (only when running inside Airflow);
3. for local demos only: a random key generated once into ``$RECFLOW_HOME/secrets/pseudonym.key``
   (mode 0600, outside every artifact folder). A log line says so, without the key.

The key is never logged, returned in XCom or written to MLflow.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from recflow.errors import ConfigError

if TYPE_CHECKING:
    from recflow.types import Dataset

KEY_ENV = "RECFLOW_PSEUDONYM_KEY"
KEY_VARIABLE = "recflow_pseudonym_key"
KEY_FILE = Path("secrets") / "pseudonym.key"
PREFIX = "p_"
DIGEST_HEX_CHARS = 24  # 96 bits: collisions need ~2^48 users, far beyond any catalogue here
MIN_KEY_BYTES = 16
PSEUDONYM_RE = re.compile(rf"^{PREFIX}[0-9a-f]{{{DIGEST_HEX_CHARS}}}$")


def _check_key(key: bytes, where: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"pseudonym key from {where}: expected at least {MIN_KEY_BYTES} bytes, found "
            f'{len(key)}; set a longer random secret (e.g. `python -c "import secrets; '
            'print(secrets.token_hex(32))"`)'
        )
    return key


def _airflow_variable() -> str | None:
    # Only consulted when an Airflow task is running: outside Airflow the import or the lookup
    # fails and we fall through to the next source.
    if "airflow" not in sys.modules:
        return None
    try:
        from airflow.sdk import Variable

        value = Variable.get(KEY_VARIABLE, default=None)
    except Exception:  # noqa: BLE001 - any failure means "no variable here"
        return None
    return str(value) if value else None


def load_key(work_dir: Path | None = None, *, create: bool = True) -> bytes:
    """The pseudonymisation key (see the module docstring for where it comes from).

    With ``create`` and no configured key, a local key file is generated under ``work_dir``
    (default ``$RECFLOW_HOME``); without ``create`` a missing key raises ConfigError.
    """
    env = os.environ.get(KEY_ENV)
    if env:
        return _check_key(env.encode("utf-8"), f"${KEY_ENV}")
    variable = _airflow_variable()
    if variable:
        return _check_key(variable.encode("utf-8"), f"Airflow Variable {KEY_VARIABLE}")
    from recflow.config import default_work_dir

    path = Path(work_dir or default_work_dir()) / KEY_FILE
    if path.is_file():
        return _check_key(path.read_bytes().strip(), str(path))
    if not create:
        raise ConfigError(
            f"pseudonym key: expected ${KEY_ENV}, the Airflow Variable {KEY_VARIABLE} or the "
            f"file {path}, found none; set {KEY_ENV} to the key the pipeline used"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    key = secrets.token_hex(32).encode("ascii")
    # O_EXCL: two tasks racing to create the key must not end up with different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _check_key(path.read_bytes().strip(), str(path))
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    print(
        f"[recflow] privacy: no {KEY_ENV} configured; generated a local demo key in {path} "
        "(mode 0600). Set the environment secret in production.",
        file=sys.stderr,
        flush=True,
    )
    return key


def pseudonymise_one(user_id: str, key: bytes) -> str:
    digest = hmac.new(key, str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:DIGEST_HEX_CHARS]


def pseudonymise(user_ids: Iterable[str], key: bytes) -> list[str]:
    """Pseudonyms of ``user_ids``, in order (equal ids give equal pseudonyms)."""
    cache: dict[str, str] = {}
    out = []
    for uid in user_ids:
        s = str(uid)
        if s not in cache:
            cache[s] = pseudonymise_one(s, key)
        out.append(cache[s])
    return out


def is_pseudonym(value: str) -> bool:
    return bool(PSEUDONYM_RE.match(value))


def pseudonymise_dataset(ds: Dataset, key: bytes) -> Dataset:
    """A copy of a ``recflow.types.Dataset`` whose user ids (interactions and users) are
    pseudonyms; nulls stay null so that validation still reports them."""
    import dataclasses

    import pandas as pd

    from recflow.schema import USER_ID

    def convert(df: pd.DataFrame | None) -> pd.DataFrame | None:
        if df is None or USER_ID not in df.columns:
            return df
        col = df[USER_ID]
        present = col.notna()
        values = pd.Series(pd.NA, index=df.index, dtype="string")
        values[present] = pseudonymise(col[present].astype(str).tolist(), key)
        return df.assign(**{USER_ID: values})

    return dataclasses.replace(ds, interactions=convert(ds.interactions), users=convert(ds.users))
