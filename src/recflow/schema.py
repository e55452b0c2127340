"""Column names and dtypes of the canonical tables. Use these constants, never literals.

interactions: one row per event: USER_ID (str), ITEM_ID (str), RATING (float64; 1.0 for
implicit events), TIMESTAMP (int64, unix seconds).
items: ITEM_ID (str), TITLE (str), GENRES (str, genre names joined by GENRE_SEPARATOR; may be "").
users (optional): USER_ID (str) plus any attribute columns.
"""

from __future__ import annotations

USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"

TITLE = "title"
GENRES = "genres"
GENRE_SEPARATOR = "|"

INTERACTION_COLUMNS = (USER_ID, ITEM_ID, RATING, TIMESTAMP)
ITEM_COLUMNS = (ITEM_ID, TITLE, GENRES)

# Nullable dtypes so that nulls survive reading and are reported by validation.
INTERACTION_DTYPES = {USER_ID: "string", ITEM_ID: "string", RATING: "Float64", TIMESTAMP: "Int64"}
ITEM_DTYPES = {ITEM_ID: "string", TITLE: "string", GENRES: "string"}

# File names inside a run's data folder.
INTERACTIONS_FILE = "interactions.parquet"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
