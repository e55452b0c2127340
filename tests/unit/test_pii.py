"""Columns that look like personal data are refused, by name or by values, never quoting them."""

from __future__ import annotations

import pandas as pd
import pytest

from recflow.config import SyntheticConfig, ValidationConfig
from recflow.data import generate_synthetic
from recflow.types import Dataset
from recflow.validation import pii

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        ("email", "email"),
        ("E-Mail", "email"),
        ("userEmail", "email"),
        ("phone_number", "phone"),
        ("first_name", "name"),
        ("Surname", "name"),
        ("name", "name"),
        ("home_address", "address"),
        ("street", "address"),
    ],
)
def test_personal_column_names(column: str, kind: str) -> None:
    assert pii.kind_by_name(column) == kind


@pytest.mark.parametrize(
    "column",
    [
        "user_id",
        "item_id",
        "title",
        "genres",
        "rating",
        "timestamp",
        "zip_code",
        "age",
        "occupation",
        "gender",
        "automobile",
    ],
)
def test_ordinary_column_names(column: str) -> None:
    assert pii.kind_by_name(column) is None


def test_values_reveal_emails_phones_and_addresses_under_harmless_names() -> None:
    df = pd.DataFrame(
        {
            "contact": ["ann@example.org", "bo.b@mail.co.uk", "c@x.io", ""],
            "note": ["+44 20 7946 0958", "(555) 123-4567", "555-123-4567", "n/a"],
            "where": ["221 Baker Street", "10 Downing St", "1600 Pennsylvania Avenue", "-"],
            "when": ["1995-07-12", "2001-01-01", "1999-12-31", "2020-02-02"],
            "code": ["123456789012", "987654321000", "111111111111", "222222222222"],
        }
    )
    found = {f.column: f.kind for f in pii.scan_frame(df, "t")}
    assert found == {"contact": "email", "note": "phone", "where": "address"}


def test_one_title_that_looks_like_an_address_is_not_personal_data() -> None:
    titles = ["84 Charing Cross Road (1987)"] + [f"Film {i} (1990)" for i in range(20)]
    assert pii.scan_frame(pd.DataFrame({"title": titles}), "items") == []


def test_synthetic_and_movielens_like_tables_pass() -> None:
    ds = generate_synthetic(SyntheticConfig(n_users=30, n_items=20))
    users = pd.DataFrame(
        {
            "user_id": ["1", "2"],
            "age": [24, 53],
            "gender": ["M", "F"],
            "occupation": ["technician", "other"],
            "zip_code": ["85711", "94043"],
        }
    )
    pii.check_dataset(Dataset(ds.interactions, ds.items, users))


def test_refusal_names_columns_but_never_values(tmp_path) -> None:
    ds = generate_synthetic(SyntheticConfig(n_users=30, n_items=20))
    users = pd.DataFrame(
        {
            "user_id": ["1", "2"],
            "email": ["secret.person@example.com", "x@y.org"],
            "bio": ["call +1 (202) 555-0143", "+1 202 555 0199"],
        }
    )
    with pytest.raises(pii.PersonalDataFound) as info:
        pii.check_dataset(Dataset(ds.interactions, ds.items, users))
    text = str(info.value)
    assert "users.email" in text and "users.bio" in text
    assert "secret.person" not in text and "555" not in text
    assert all(f["sample_rows"] == [] for f in info.value.failures)
    # validate_dataset refuses it too, before writing Data Docs about it
    from recflow.validation import validate_dataset

    with pytest.raises(pii.PersonalDataFound):
        validate_dataset(Dataset(ds.interactions, ds.items, users), ValidationConfig(), tmp_path)
    assert not any(tmp_path.iterdir())
