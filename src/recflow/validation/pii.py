"""Refuse tables that carry personal data (emails, phone numbers, names, street addresses).

Recommendations need who-did-what, never who someone is. A column is refused when its NAME
says it holds personal data (``email``, ``phone``, ``first_name``, ``address``...) or when a
sample of its VALUES looks like it (a share of at least ``min_share`` of the non-null sampled
cells matches an email, phone, street-address or IP pattern). The user id column itself is
exempt: ingest replaces it with a keyed pseudonym (``recflow.privacy``) before writing.

Deliberately not refused: ZIP/postcode columns (MovieLens ships them; coarse quasi-identifiers,
not direct identifiers) and single matches inside free text (a film called
"84 Charing Cross Road" is a title, not an address): hence the share threshold.

Error messages and findings never quote the offending values: the report must not become the
leak it warns about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, Unpack

from recflow.errors import ValidationFailed
from recflow.schema import USER_ID

if TYPE_CHECKING:
    import pandas as pd

    from recflow.types import Dataset

SAMPLE_ROWS = 1000
MIN_SHARE = 0.2

# Normalised column names (lower case, only letters and digits) that are personal data as a
# whole, and tokens that make any name personal data when present.
_EXACT_NAMES = {
    "name": "name",
    "firstname": "name",
    "lastname": "name",
    "fullname": "name",
    "givenname": "name",
    "familyname": "name",
    "surname": "name",
    "username": "name",
    "displayname": "name",
    "tel": "phone",
    "fax": "phone",
    "cell": "phone",
    "ip": "ip address",
    "ipaddress": "ip address",
    "dob": "birth date",
    "dateofbirth": "birth date",
    "birthdate": "birth date",
    "birthday": "birth date",
}
_TOKENS = {
    "email": "email",
    "mail": "email",
    "phone": "phone",
    "telephone": "phone",
    "mobile": "phone",
    "msisdn": "phone",
    "surname": "name",
    "firstname": "name",
    "lastname": "name",
    "address": "address",
    "street": "address",
    "ssn": "national id",
    "passport": "national id",
}

# Tokens distinctive enough to find inside glued names ("mobile" is not: "automobile").
_GLUED = ("email", "telephone", "phone", "address", "surname", "firstname", "lastname")

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PHONE = re.compile(r"^\+?(?:\(\d{1,4}\)|\d)[\d\s().-]{6,}\d$")
_STREET = re.compile(
    r"\b\d{1,5}\s+(?:[A-Za-z][\w'.-]*\s+){1,4}(?:street|st|avenue|ave|road|rd|lane|ln|"
    r"boulevard|blvd|drive|dr|court|ct|way|place|pl|square|sq|terrace|close|crescent)\b\.?",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"^(?:\d{1,3}\.){3}\d{1,3}$")


def _is_phone(cell: str) -> bool:
    # Digit count separates phone numbers from dates (8 digits) and short ids; a separator or
    # a leading + separates them from long numeric ids.
    digits = sum(ch.isdigit() for ch in cell)
    return (
        9 <= digits <= 15
        and bool(_PHONE.match(cell))
        and (cell.startswith("+") or any(c in cell for c in " ().-"))
    )


_VALUE_CHECKS = (
    ("email", lambda c: bool(_EMAIL.search(c))),
    ("phone", _is_phone),
    ("address", lambda c: bool(_STREET.search(c))),
    ("ip address", lambda c: bool(_IPV4.match(c))),
)


def looks_personal(cell: str) -> str | None:
    """The kind of personal data one value looks like (email, phone, ...), or None."""
    for kind, check in _VALUE_CHECKS:
        if check(cell):
            return kind
    return None


@dataclass(frozen=True)
class Finding:
    table: str
    column: str
    kind: str  # email, phone, name, address, ...
    evidence: str  # "column name" or "values"
    share: float | None  # share of sampled values that matched (values evidence only)

    def describe(self) -> str:
        how = (
            "its name says so"
            if self.evidence == "column name"
            else f"{self.share:.0%} of sampled values look like one"
        )
        return f"{self.table}.{self.column}: looks like {self.kind} ({how})"


class PersonalDataFound(ValidationFailed):
    """Input tables hold columns that look like personal data."""


def _tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def kind_by_name(column: str) -> str | None:
    """The kind of personal data a column name announces, or None."""
    flat = re.sub(r"[^a-z0-9]", "", column.lower())
    if flat in _EXACT_NAMES:
        return _EXACT_NAMES[flat]
    for token in _tokens(column):
        if token in _TOKENS:
            return _TOKENS[token]
    for token in _GLUED:
        # e.g. "useremail", "homeaddress": names glued without separators or camel case
        if token in flat:
            return _TOKENS[token]
    return None


def kind_by_values(values: Iterable[str], min_share: float = MIN_SHARE) -> tuple[str, float] | None:
    cells = [v.strip() for v in values if v and v.strip()]
    if not cells:
        return None
    for kind, test in _VALUE_CHECKS:
        share = sum(1 for c in cells if test(c)) / len(cells)
        if share >= min_share:
            return kind, share
    return None


class ScanOptions(TypedDict, total=False):
    """The keyword arguments of :func:`scan_frame` that the dataset-level checks pass on."""

    exempt: Iterable[str]
    sample_rows: int
    min_share: float
    check_names: bool


def scan_frame(
    df: pd.DataFrame,
    table: str,
    *,
    exempt: Iterable[str] = (USER_ID,),
    sample_rows: int = SAMPLE_ROWS,
    min_share: float = MIN_SHARE,
    check_names: bool = True,
) -> list[Finding]:
    """Findings for one table: by column name, then by a sample of the text values."""
    import pandas as pd

    skip = set(exempt)
    sample = df.head(sample_rows)
    found: list[Finding] = []
    for column in df.columns:
        col = str(column)
        if col in skip:
            continue
        kind = kind_by_name(col) if check_names else None
        if kind is not None:
            found.append(Finding(table, col, kind, "column name", None))
            continue
        series = sample[column]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue  # numbers cannot hold emails or addresses; phone numbers come as text
        hit = kind_by_values(series.dropna().astype(str).tolist(), min_share)
        if hit is not None:
            found.append(Finding(table, col, hit[0], "values", round(hit[1], 3)))
    return found


def scan_dataset(ds: Dataset, **kwargs: Unpack[ScanOptions]) -> list[Finding]:
    tables: dict[str, pd.DataFrame | None] = {
        "interactions": ds.interactions,
        "items": ds.items,
        "users": ds.users,
    }
    found: list[Finding] = []
    for table, df in tables.items():
        if df is not None:
            found.extend(scan_frame(df, table, **kwargs))
    return found


def raise_if_found(findings: list[Finding], data_docs: str | None = None) -> None:
    """PersonalDataFound listing every finding (never the values), or nothing."""
    if not findings:
        return
    lines = [f"personal data found: {len(findings)} column(s) refused"]
    lines += [f"- {f.describe()}" for f in findings]
    lines.append(
        "Drop these columns from the source (recommendations need only pseudonymous user ids, "
        "item ids, ratings and timestamps), or map a personal identifier to user_id via "
        "column_mapping so that it is pseudonymised."
    )
    failures = [
        {
            "table": f.table,
            "expectation": "no_personal_data",
            "column": f.column,
            "observed": {"kind": f.kind, "evidence": f.evidence, "share": f.share},
            "sample_rows": [],  # never the values themselves
        }
        for f in findings
    ]
    raise PersonalDataFound("\n".join(lines), failures=failures, data_docs=data_docs)


def check_dataset(ds: Dataset, **kwargs: Unpack[ScanOptions]) -> None:
    raise_if_found(scan_dataset(ds, **kwargs))


def check_tables(tables: Mapping[str, pd.DataFrame], **kwargs: Unpack[ScanOptions]) -> None:
    found: list[Finding] = []
    for table, df in tables.items():
        found.extend(scan_frame(df, table, **kwargs))
    raise_if_found(found)
