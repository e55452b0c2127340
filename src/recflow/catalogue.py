"""What a model knows: its catalogue, recorded with every registered version and compared
before a candidate is measured against the champion.

Items are compared by id (the ids the model's ``catalogue_item_ids`` holds); the catalogue
digest is the sha256 of the sorted ids, so two versions with the same digest know exactly the
same item set. Titles are not compared: they may be corrected between runs (and synthetic
titles carry a genre drawn per seed), while a recommendation is an item id.

Recorded on each registered version (MLflow model version tags):
    catalogue.digest   sha256 hex of the catalogue (see above)
    catalogue.size     number of items
    catalogue.source   the data source the model was trained from (ingest's ``source``)

Light module (no TensorFlow, numpy only inside functions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recflow.jsontypes import JSONObject

if TYPE_CHECKING:
    from recflow.types import ScoreFn

TAG_DIGEST = "catalogue.digest"
TAG_SIZE = "catalogue.size"
TAG_SOURCE = "catalogue.source"
UNKNOWN_SOURCE = "unknown"


@dataclass(frozen=True)
class Catalogue:
    item_ids: tuple[str, ...]
    source: str = UNKNOWN_SOURCE

    @property
    def size(self) -> int:
        return len(self.item_ids)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for item in sorted(set(self.item_ids)):
            h.update(f"{len(item)}:{item}\n".encode())  # length prefix: no separator ambiguity
        return h.hexdigest()

    def summary(self) -> JSONObject:
        return {"digest": self.digest, "size": self.size, "source": self.source}

    def tags(self) -> dict[str, str]:
        return {TAG_DIGEST: self.digest, TAG_SIZE: str(self.size), TAG_SOURCE: self.source}


@dataclass(frozen=True)
class Overlap:
    """How much of the champion's catalogue the candidate knows."""

    shared_ids: tuple[str, ...]  # item ids (candidate order) that both models know
    candidate_size: int
    champion_size: int

    @property
    def shared(self) -> int:
        return len(self.shared_ids)

    @property
    def share_of_champion(self) -> float:
        return self.shared / self.champion_size if self.champion_size else 0.0

    def to_dict(self) -> JSONObject:
        return {
            "shared": self.shared,
            "candidate_size": self.candidate_size,
            "champion_size": self.champion_size,
            "share_of_champion": self.share_of_champion,
        }


def overlap(candidate: Catalogue, champion: Catalogue) -> Overlap:
    known = set(champion.item_ids)
    shared = tuple(dict.fromkeys(i for i in candidate.item_ids if i in known))
    return Overlap(shared, len(set(candidate.item_ids)), len(known))


def from_ids(item_ids: Sequence[object], source: str = UNKNOWN_SOURCE) -> Catalogue:
    return Catalogue(tuple(_text(i) for i in item_ids), source)


def of_scorer(score_fn: ScoreFn, source: str = UNKNOWN_SOURCE) -> Catalogue:
    """The catalogue a scorer ranks (asked for no users: nothing is scored)."""
    import numpy as np

    _, item_ids = score_fn(np.asarray([], dtype=object))
    return from_ids(list(np.asarray(item_ids).reshape(-1)), source)


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def recorded_source(tags: Mapping[str, str], run_tags: Mapping[str, str] | None = None) -> str:
    """A version's data source: its catalogue tag, else its run's dataset tag, else unknown."""
    if tags.get(TAG_SOURCE):
        return str(tags[TAG_SOURCE])
    if run_tags and run_tags.get("dataset.source"):
        return str(run_tags["dataset.source"])
    return UNKNOWN_SOURCE
