"""Demo step: ingest house listings from a flaky local REST API into Parquet.

Starts :class:`~datafuel.ingest._fakeapi.FakeAPI` on 127.0.0.1 (a free port) with
300 listings over 6 cursor-paginated pages, one 429 (``Retry-After: 0``) and one 503,
nested ``location`` objects, nulls and missing fields, one absurd price, and schema
drift midway (``bedrooms`` turns from int to float and ``bathrooms`` appears). The
ingest is the same call ``datafuel ingest`` makes. Feeds the table step through
``ctx.results["ingest_dir"]`` (numeric columns plus ``id``: build with
``--target price --drop id``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datafuel.ingest import DriftLog, ingest, read_ingested
from datafuel.ingest._fakeapi import FakeAPI

from ._demo import DemoContext

N_LISTINGS = 300
PAGE_SIZE = 50
DRIFT_AT = 200  # first record of page 4: the API "ships a new version" here


def listings(seed: int) -> list[dict[str, Any]]:
    """Deterministic listings; price depends on size, rooms, age and place, plus noise."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for i in range(N_LISTINGS):
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
        if i >= DRIFT_AT:  # API v2: half bedrooms (dens) and a new field
            rec["bedrooms"] = bedrooms + (0.5 if i % 3 == 0 else 0.0)
            rec["bathrooms"] = float(max(1, bedrooms - 1) + (0.5 if i % 2 else 0.0))
        out.append(rec)
    out[137]["price"] = 999_000_000.0  # a data-entry error for the winsorizer
    return out


def run(ctx: DemoContext) -> None:
    records = listings(ctx.seed)
    out = ctx.workdir / "ingest" / "listings"
    with FakeAPI(
        records,
        page_size=PAGE_SIZE,
        style="cursor",
        records_path="data.items",
        faults={1: ["429:0"], 3: ["503"]},
        lifetime=60.0,
    ) as api:
        ctx.say(
            f"local API at {api.url}: {len(records)} listings, {PAGE_SIZE} per page, cursor pagination"
        )
        result = ingest(
            api.url,
            out,
            paginate="cursor:next",
            records_path="data.items",
            primary_key="id",
            retry_base=0.05,
            max_attempts=5,
        )
        requests = len(api.served)
        faults = api.faults_served
    ctx.say(
        f"ingested {result.pages} pages, {result.records} records in {requests} requests; "
        f"{result.retries} retries (server injected {', '.join(faults) or 'nothing'})"
    )
    events = DriftLog(out).read()
    for e in events:
        change = (
            f"{e.get('old_type')} -> {e['type']}"
            if e["kind"] == "type_change"
            else e.get("type", "")
        )
        ctx.say(f"drift on page {e['page']}: {e['kind']} {e['field']} {change}".rstrip())
    table = read_ingested(out)
    nulls = {
        c: table.column(c).null_count for c in table.column_names if table.column(c).null_count
    }
    ctx.say(f"columns: {', '.join(f'{k}:{v}' for k, v in result.schema.items())}")
    ctx.say(f"nulls per column: {nulls}; parts + _state.json + _drift.jsonl in {out}")
    ctx.results["ingest_dir"] = out
    ctx.results["ingest_records"] = result.records
