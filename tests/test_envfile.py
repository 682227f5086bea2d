"""The `.env` parser: byte-exact round trips, and a replaced value is the only thing that changes."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotation import envfile
from rotation.errors import EnvFileError

SAMPLE = (
    "# comment line\r\n"
    "\r\n"
    "PLAIN=abc\r\n"
    "export EXPORTED=def\r\n"
    "SINGLE='it''s'\r\n"
    'DOUBLE="a \\"quoted\\" value"\r\n'
    "INLINE=value   # trailing comment\r\n"
    "  SPACED = spaced value  \r\n"
    "EMPTY=\r\n"
    "HASH=abc#def\r\n"
    "LAST=no-newline"
)


def test_unchanged_file_renders_byte_for_byte() -> None:
    assert envfile.parse(SAMPLE).render() == SAMPLE.encode()


def test_values_are_read_as_compose_reads_them() -> None:
    parsed = envfile.parse(SAMPLE)
    assert parsed.get("PLAIN") == "abc"
    assert parsed.get("EXPORTED") == "def"
    assert parsed.get("DOUBLE") == 'a "quoted" value'
    assert parsed.get("INLINE") == "value"
    assert parsed.get("SPACED") == "spaced value"
    assert parsed.get("EMPTY") == ""
    assert parsed.get("HASH") == "abc#def"
    assert parsed.get("LAST") == "no-newline"
    assert parsed.get("MISSING") is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("KEY=old\n", "KEY=NEW\n"),
        ("export KEY=old\n", "export KEY=NEW\n"),
        ("KEY='old'\n", "KEY='NEW'\n"),
        ('KEY="old"\n', 'KEY="NEW"\n'),
        ("KEY=old # keep me\n", "KEY=NEW # keep me\n"),
        ("KEY=old\r\n", "KEY=NEW\r\n"),
        ("KEY=old", "KEY=NEW"),
        ("  KEY = old  \n", "  KEY = NEW  \n"),
        ("KEY=\n", "KEY=NEW\n"),
    ],
)
def test_replace_keeps_prefix_quotes_comments_and_line_endings(line: str, expected: str) -> None:
    assert envfile.parse(line).replace({"KEY": "NEW"}).render() == expected.encode()


def test_every_occurrence_of_a_duplicated_key_is_updated() -> None:
    parsed = envfile.parse("KEY=one\nOTHER=x\nKEY=two\n")
    assert parsed.count("KEY") == 2
    assert parsed.replace({"KEY": "new"}).text == "KEY=new\nOTHER=x\nKEY=new\n"


def test_multiline_double_quoted_value_is_one_entry() -> None:
    text = 'CERT="line1\nline2"\nNEXT=ok\n'
    parsed = envfile.parse(text)
    assert parsed.get("CERT") == "line1\nline2"
    assert parsed.get("NEXT") == "ok"
    assert parsed.render() == text.encode()


def test_unwritable_value_for_the_quoting_style_is_refused() -> None:
    with pytest.raises(EnvFileError, match="KEY"):
        envfile.parse("KEY=old\n").replace({"KEY": "has space"})


def test_non_utf8_bytes_survive_a_round_trip(tmp_path: pytest.TempPathFactory) -> None:
    raw = b"# caf\xe9 latin-1 comment\nKEY=old\n"
    path = tmp_path / ".env"  # type: ignore[operator]
    path.write_bytes(raw)
    parsed = envfile.read(path)
    assert parsed.render() == raw
    assert parsed.replace({"KEY": "new"}).render() == raw.replace(b"old", b"new")


lines = st.lists(
    st.one_of(
        st.text(alphabet=string.printable, max_size=40),
        st.builds(
            lambda e, k, q, v, c: f"{e}{k}={q}{v}{q}{c}",
            st.sampled_from(["", "export ", "  "]),
            st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True),
            st.sampled_from(["", "'", '"']),
            st.text(alphabet=string.ascii_letters + string.digits + " #=$", max_size=20),
            st.sampled_from(["", " # note", "   "]),
        ),
    ),
    max_size=12,
)
endings = st.sampled_from(["\n", "\r\n"])


@settings(max_examples=300)
@given(lines, endings, st.booleans())
def test_render_of_parse_is_identity(body: list[str], eol: str, final: bool) -> None:
    text = eol.join(body) + (eol if final and body else "")
    assert envfile.parse(text).render() == text.encode("utf-8", "surrogateescape")


@settings(max_examples=300)
@given(lines, endings, st.from_regex(r"[A-Za-z0-9]{1,30}", fullmatch=True))
def test_replacing_a_key_changes_only_its_values(body: list[str], eol: str, new: str) -> None:
    text = eol.join(body)
    parsed = envfile.parse(text)
    if not parsed.entries:
        return
    key = parsed.entries[0].key
    try:
        changed = parsed.replace({key: new})
    except EnvFileError:
        return
    assert changed.get(key) == new
    for entry in parsed.entries:
        if entry.key != key:
            assert changed.get(entry.key) == parsed.get(entry.key)
    # Outside the replaced spans, every character is the same and in the same order.
    old_spans = [e for e in parsed.entries if e.key == key]
    new_spans = [e for e in changed.entries if e.key == key]
    assert len(old_spans) == len(new_spans)

    def outside(source: str, spans: list[envfile.Entry]) -> list[str]:
        edges = [0, *(x for e in spans for x in (e.start, e.end)), len(source)]
        return [source[a:b] for a, b in zip(edges[::2], edges[1::2], strict=True)]

    assert outside(text, old_spans) == outside(changed.text, new_spans)
