"""Secrets: headers only to allowed origins, secret query values never written or printed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hostile_server import HostileServer, Reply, Seen, json_reply
from ingest_server import FakeAPI, all_bytes_under, listings

from datafuel.errors import ConfigError, HTTPError, IngestError
from datafuel.ingest import ingest, read_ingested
from datafuel.ingest._secrets import SecretPolicy, is_secret_param, origin, redact_url

CURSOR = {"paginate": "cursor:next", "records_path": "data.items"}
SECRET = "s3cr3t-T0KEN-4f9a"
HEADERS = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}


def got_secret(seen: list[Seen]) -> bool:
    return any(SECRET in v for s in seen for v in s.headers.values())


def page(ids: list[int], **headers: str) -> Reply:
    return json_reply({"data": {"items": [{"id": i} for i in ids]}}, **headers)


@pytest.mark.parametrize("allow", [False, True])
def test_redirect_to_another_origin_gets_no_user_headers(tmp_path: Path, allow: bool) -> None:
    with HostileServer(lambda s, r: page([])) as other:

        def route(s: HostileServer, r: Seen) -> Reply:
            return Reply(302, {"Location": other.url("/items")})

        with HostileServer(route) as start:
            r = ingest(
                start.url(),
                tmp_path / "o",
                headers=HEADERS,
                allow_origins=[other.origin] if allow else [],
                **CURSOR,
            )
            assert r.status == "done"
            assert got_secret(start.seen)  # the start origin does get them
            assert got_secret(other.seen) is allow  # httpx alone would send X-Api-Key


def test_link_next_on_another_origin_gets_no_user_headers(tmp_path: Path) -> None:
    with HostileServer(lambda s, r: page([3, 4] if not r.query else [])) as other:
        with HostileServer(
            lambda s, r: page([1, 2], Link=f'<{other.url("/items")}>; rel="next"')
        ) as start:
            ingest(
                start.url(),
                tmp_path / "o",
                headers=HEADERS,
                paginate="link",
                records_path="data.items",
            )
        assert got_secret(start.seen) and other.seen and not got_secret(other.seen)
    assert read_ingested(tmp_path / "o").column("id").to_pylist() == [1, 2, 3, 4]


def test_cursor_url_on_another_origin_gets_no_user_headers(tmp_path: Path) -> None:
    with HostileServer(lambda s, r: page([])) as other:
        with HostileServer(
            lambda s, r: json_reply({"data": {"items": [{"id": 1}]}, "next": other.url("/x")})
        ) as start:
            ingest(start.url(), tmp_path / "o", headers=HEADERS, **CURSOR)
        assert got_secret(start.seen) and other.seen and not got_secret(other.seen)


def test_checkpoint_next_url_edited_to_another_origin_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with FakeAPI(listings(30), page_size=10) as api, HostileServer(lambda s, r: page([])) as evil:
        ingest(api.url, out, headers=HEADERS, max_pages=1, **CURSOR)
        state = json.loads((out / "_state.json").read_text())
        state["next"]["url"] = evil.url("/steal")
        (out / "_state.json").write_text(json.dumps(state))
        with pytest.raises(IngestError, match=r"next\.url.*refusing to resume") as info:
            ingest(api.url, out, headers=HEADERS, **CURSOR)
        assert evil.seen == []
    assert info.value.field == "next.url" and SECRET not in str(info.value)
    assert read_ingested(out).num_rows == 10  # nothing deleted


def test_secret_query_values_are_sent_but_never_written_or_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "o"
    caplog.set_level(logging.DEBUG)
    qs = f"?api_key={SECRET}&X-Amz-Signature={SECRET}x&session={SECRET}y&region=eu"
    with FakeAPI(listings(40), page_size=10, faults={2: ["503", "404"]}) as api:
        url = api.url + qs
        with pytest.raises(HTTPError) as info:
            ingest(url, out, secret_params=["Session"], retry_base=0, **CURSOR)
        message = str(info.value)
        assert "page 2" in message and "api_key=***" in message and "region=eu" in message
        state_text = (out / "_state.json").read_text()
        assert "api_key=***" in state_text
        r = ingest(url, out, secret_params=["session"], retry_base=0, **CURSOR)  # resumes
        sent = [s.params for s in api.served]
    assert r.resumed and r.records == 40
    assert all(p.get("api_key") == SECRET and p.get("session") == f"{SECRET}y" for p in sent)
    assert SECRET not in message and SECRET not in caplog.text
    assert SECRET.encode() not in all_bytes_under(out)
    for part in out.glob("*.parquet"):
        assert SECRET.encode() not in repr(pq.read_metadata(part).metadata).encode()
    assert read_ingested(out).column("id").to_pylist() == list(range(40))


def test_resume_after_the_key_was_rotated_uses_the_new_key(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with FakeAPI(listings(30), page_size=10) as api:
        ingest(api.url + "?token=old-0000", out, max_pages=1, **CURSOR)
        ingest(api.url + "?token=new-1111", out, **CURSOR)
        tokens = [s.params["token"] for s in api.served]
    assert tokens[0] == "old-0000" and set(tokens[1:]) == {"new-1111"}
    assert read_ingested(out).num_rows == 30


@pytest.mark.parametrize(
    "value", ["Bearer abc\r\nX-Evil: 1", "Bearer abc\nX", "Bearer caf\u00e9-s3cr3t", "a\x00b"]
)
def test_bad_header_value_is_a_config_error_naming_the_header_not_the_value(
    tmp_path: Path, value: str
) -> None:
    with FakeAPI(listings(5), page_size=10) as api:
        with pytest.raises(ConfigError, match="header 'Authorization'") as info:
            ingest(api.url, tmp_path / "o", headers={"Authorization": value}, **CURSOR)
        assert api.served == []  # refused before any request, not retried
    assert value not in str(info.value) and "abc" not in str(info.value)
    assert "s3cr3t" not in str(info.value)


def test_bad_allow_origin_and_secret_param_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--allow-origin"):
        ingest("http://127.0.0.1:9/x", tmp_path / "o", allow_origins=["http://h/path"])
    with pytest.raises(ConfigError, match="secret_params"):
        ingest("http://127.0.0.1:9/x", tmp_path / "p", secret_params=[""])


def test_secret_names_origins_and_redaction() -> None:
    names = ["key", "API_KEY", "apikey", "Token", "access_token", "secret", "password"]
    assert all(is_secret_param(n) for n in [*names, "signature", "sig", "x_api_key", "x-token"])
    assert not any(is_secret_param(n) for n in ["page", "cursor", "monkey", "limit", "design"])
    assert (
        origin("http://A.example:80/x")
        == origin("http://a.example/y")
        != origin("https://a.example/")
    )
    assert redact_url("http://h/x?a=1&token=t%20v&b=c+d") == "http://h/x?a=1&token=***&b=c+d"
    policy = SecretPolicy("https://h/x?key=abcdef", headers={"X": "hdr-value"})
    assert (
        policy.scrub("at https://h/x?key=abcdef with hdr-value")
        == "at https://h/x?key=*** with ***"
    )
    url, _ = policy.unredact("https://h/x?key=***&page=2", [], where="next")
    assert url == "https://h/x?key=abcdef&page=2"
    with pytest.raises(IngestError, match="not the origin"):
        policy.unredact("https://evil/x?key=***", [], where="next")
