"""Sample house listings, as the demo's local REST API serves them."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LISTINGS_DRIFT_AT", "sample_listings"]

_N_LISTINGS = 300
#: Index of the first listing in the API's "v2" shape (half bedrooms, a ``bathrooms`` field).
LISTINGS_DRIFT_AT = 200
_OUTLIER = 137  # a data-entry error for the winsorizer: price 999,000,000


def sample_listings(seed: int = 0) -> list[dict[str, Any]]:
    """300 deterministic listings that exercise an ingest: nulls, missing fields, drift.

    Price depends on size, rooms, age and place, plus noise. Listing 137 costs an absurd
    999,000,000; every 17th (from 4) has a null ``sqft``, every 23rd (from 7) lacks
    ``year_built``, every 41st (from 9) lacks the nested ``location``; from listing
    :data:`LISTINGS_DRIFT_AT` on, ``bedrooms`` is a float and ``bathrooms`` appears.

    Examples
    --------
    >>> recs = sample_listings(seed=0)
    >>> len(recs), recs[0]["id"], recs[137]["price"], "bathrooms" in recs[250]
    (300, 1000, 999000000.0, True)
    """
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for i in range(_N_LISTINGS):
        sqft = int(rng.integers(600, 4200))
        bedrooms = int(np.clip(round(sqft / 700 + rng.normal(0, 0.7)), 1, 7))
        year = int(rng.integers(1920, 2024))
        lat = round(47.5 + rng.uniform(0, 0.3), 5)
        lon = round(-122.45 + rng.uniform(0, 0.3), 5)
        price = (
            40_000 + 210.0 * sqft + 9_000 * bedrooms + 600 * (year - 1920) + 250_000 * (lat - 47.5)
        )
        rec: dict[str, Any] = {
            "id": 1000 + i,
            "price": round(float(price * rng.lognormal(0, 0.08)), 2),
            "sqft": sqft,
            "bedrooms": bedrooms,
            "year_built": year,
            "location": {"lat": lat, "lon": lon},
        }
        if i % 17 == 4:
            rec["sqft"] = None  # a null
        if i % 23 == 7:
            del rec["year_built"]  # a missing field
        if i % 41 == 9:
            del rec["location"]  # a missing nested object
        if i >= LISTINGS_DRIFT_AT:  # API v2: half bedrooms (dens) and a new field
            rec["bedrooms"] = bedrooms + (0.5 if i % 3 == 0 else 0.0)
            rec["bathrooms"] = float(max(1, bedrooms - 1) + (0.5 if i % 2 else 0.0))
        out.append(rec)
    out[_OUTLIER]["price"] = 999_000_000.0
    return out
