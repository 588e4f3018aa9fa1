from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from datafuel.errors import ConfigError, InputDataError
from datafuel.text import Corpus


def test_jsonl_txt_and_directories_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("second file\nstill second\n")
    (tmp_path / "b" / "1.jsonl").write_text('{"text": "j1"}\n\n{"text": "j2", "id": 3}\n')
    (tmp_path / "b" / "notes.csv").write_text("a,b\n")
    (tmp_path / "a.txt").write_text("first")
    c = Corpus([tmp_path / "a.txt", tmp_path / "b"])
    assert list(c) == ["first", "j1", "j2", "second file\nstill second\n"]
    assert c.stats.documents == 4 and c.stats.files == 3 and c.stats.ignored_files == 1
    assert list(c) == list(c)  # re-iterable, reads again


def test_paragraph_mode_cuts_txt_at_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_bytes(b"\xef\xbb\xbfone a\none b\n\n\n  \ntwo\r\n\r\nthree\n")
    assert list(Corpus([tmp_path / "p.txt"], txt_mode="paragraph")) == [
        "one a\none b",
        "two",
        "three",
    ]
    assert list(Corpus([tmp_path / "p.txt"])) == ["one a\none b\n\n\n  \ntwo\r\n\r\nthree\n"]


def test_invalid_utf8_is_replaced_and_counted_never_a_crash(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe then \xc3 and real \xef\xbf\xbd end")
    c = Corpus([tmp_path / "bad.txt"])
    (doc,) = list(c)
    assert doc == "ok \ufffd\ufffd then \ufffd and real \ufffd end"
    assert c.stats.replaced == 3  # the genuine U+FFFD is not counted
    (tmp_path / "bad.jsonl").write_bytes(
        b'{"text": "x\xff y"}\n{"text": "lone \\ud800 surrogate"}\n'
    )
    c = Corpus([tmp_path / "bad.jsonl"])
    assert list(c) == ["x\ufffd y", "lone \ufffd surrogate"]
    assert c.stats.replaced == 2


def test_empty_documents_are_skipped_and_counted(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text('{"text": ""}\n{"text": "  \\n"}\n{"text": "kept"}\n')
    c = Corpus([tmp_path / "e.jsonl"])
    assert list(c) == ["kept"] and c.stats.empty == 2


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"body": "x"}', "no 'text' field"),
        ("[1, 2]", "expected a JSON object"),
        ('{"text": 5}', "must be a string, got a JSON number"),
        ('{"text": null}', "must be a string, got a JSON null"),
        ('{"text": ["a", "b"]}', "must be a string, got a JSON array"),
        ('{"text": {"en": "a"}}', "must be a string, got a JSON object"),
        ('{"text": true}', "must be a string, got a JSON boolean"),
        ('{"text": "unterminated', "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"text": "x", "meta": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001, "nested too deeply"),
        ('{"text": "x", "n": ' + "9" * 5000 + "}", "not valid JSON .*digits"),
        ('{"text": "x", "n": NaN, "m": 1e999999}', None),  # Python's json reads these: no error
    ],
)
def test_bad_jsonl_lines_name_the_file_and_line(
    tmp_path: Path, line: str, match: str | None
) -> None:
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
    if match is None:
        assert list(Corpus([f])) == ["fine", "x"]
        return
    with pytest.raises(InputDataError, match=match) as e:
        list(Corpus([f]))
    assert f"{f}:2" in str(e.value) and e.value.row == 2 and e.value.path == str(f)


def test_other_text_field(tmp_path: Path) -> None:
    f = tmp_path / "c.jsonl"
    f.write_text('{"body": "x"}\n')
    assert list(Corpus([f], text_field="body")) == ["x"]


def test_missing_and_unsupported_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="not found"):
        Corpus([tmp_path / "nope.txt"])
    (tmp_path / "x.csv").write_bytes(b"text\nhi\n")
    with pytest.raises(ConfigError, match="unsupported input type '.csv'"):
        Corpus([tmp_path / "x.csv"])
    with pytest.raises(ConfigError):
        Corpus([])
    with pytest.raises(ConfigError, match="txt_mode"):
        Corpus([tmp_path], txt_mode="lines")  # type: ignore[arg-type]


def test_a_binary_txt_file_is_one_document_with_replacements_never_a_crash(
    tmp_path: Path,
) -> None:
    from datafuel.text import train_bpe

    raw = bytes(random.Random(0).randrange(256) for _ in range(20_000))
    (tmp_path / "garbage.txt").write_bytes(raw)
    c = Corpus([tmp_path / "garbage.txt"])
    (doc,) = list(c)
    assert doc == raw.decode("utf-8", errors="replace")
    assert c.stats.replaced > 0 and c.stats.bytes == len(raw)
    tok = train_bpe([doc], vocab_size=300)
    assert tok.decode(tok.encode(doc)) == doc
