"""Demo step: ingest house listings from a flaky local REST API into Parquet.

Starts :class:`~datafuel.demo.FakeAPI` on 127.0.0.1 (a free port) with
300 listings over 6 cursor-paginated pages, one 429 (``Retry-After: 0``) and one 503,
nested ``location`` objects, nulls and missing fields, one absurd price, and schema
drift midway (``bedrooms`` turns from int to float and ``bathrooms`` appears). The
ingest is the same call ``datafuel ingest`` makes. Feeds the table step through
``ctx.results["ingest_dir"]`` (numeric columns plus ``id``: build with
``--target price --drop id``).
"""

from __future__ import annotations

from datafuel.ingest import DriftLog, ingest, read_ingested

from .._api import FakeAPI
from .._context import DemoContext
from .._listings import sample_listings

PAGE_SIZE = 50


def run(ctx: DemoContext) -> None:
    records = sample_listings(ctx.seed)
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
