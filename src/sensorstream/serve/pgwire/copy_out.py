"""``COPY (SELECT …) TO STDOUT`` and ``COPY table [(columns)] TO STDOUT``, as PostgreSQL words them.

The query is an ordinary read (the same guard, limits and row bound as a SELECT: past
``READ_MAX_ROWS`` the COPY fails with 54000, it is never cut); its rows leave as CopyData, one
line each, in PostgreSQL's text or CSV format with its escaping and quoting rules, built on the
same per-column text encoders as DataRow messages (``results.encoders``). Options: ``FORMAT text |
csv``, ``HEADER``, ``DELIMITER``, ``NULL``, ``QUOTE``, ``ESCAPE``, ``FORCE_QUOTE``, ``ENCODING
'UTF8'``, in the parenthesised form or the older ``WITH CSV HEADER`` one (what psql's ``\\copy``
passes on). Anything that would write, or reach a file or a program, is refused as PostgreSQL
refuses it on a read-only server or to a role without file privileges.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlglot.tokens import Token, TokenType

from sensorstream.reads.answer import ReadResult
from sensorstream.serve.pgwire.reading import ReadError
from sensorstream.serve.pgwire.results import encode_row, encoders

_TRUE = {"true", "on", "1", "yes"}
_FALSE = {"false", "off", "0", "no"}


@dataclass(frozen=True)
class CopySpec:
    query: str
    csv: bool = False
    header: bool = False
    delimiter: str = "\t"
    null: str = "\\N"
    quote: str = '"'
    escape: str = '"'
    force_quote: tuple[str, ...] | None = None  # ("*",) for all columns


def _syntax(token: Token | None) -> ReadError:
    near = token.text if token is not None else ""
    return ReadError("42601", f'syntax error at or near "{near}"' if near else "syntax error at end of input")


def _closing(tokens: list[Token], i: int) -> int:
    """The index of the ``)`` that closes the ``(`` at ``i``."""
    depth = 0
    for j in range(i, len(tokens)):
        depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(tokens[j].token_type, 0)
        if depth == 0:
            return j
    raise _syntax(None)


def _source(sql: str, tokens: list[Token]) -> tuple[str, int]:
    """The SELECT a COPY reads, and the index of the token after its source."""
    if len(tokens) > 1 and tokens[1].token_type == TokenType.L_PAREN:
        end = _closing(tokens, 1)
        return sql[tokens[1].end + 1 : tokens[end].start].strip(), end + 1
    i = 1
    while i + 1 < len(tokens) and tokens[i + 1].token_type == TokenType.DOT:
        i += 2  # schema.table
    if i >= len(tokens):
        raise _syntax(None)
    table = sql[tokens[1].start : tokens[i].end + 1]
    i += 1
    columns = "*"
    if i < len(tokens) and tokens[i].token_type == TokenType.L_PAREN:
        end = _closing(tokens, i)
        columns = sql[tokens[i].end + 1 : tokens[end].start].strip()
        i = end + 1
    return f"SELECT {columns} FROM {table}", i


def _options(tokens: list[Token]) -> list[tuple[str, str | None]]:
    """(name, value) pairs of a COPY's options, in either syntax."""
    if tokens and tokens[0].text.upper() == "WITH":
        tokens = tokens[1:]
    found: list[tuple[str, str | None]] = []
    if tokens and tokens[0].token_type == TokenType.L_PAREN:
        if _closing(tokens, 0) != len(tokens) - 1:
            raise _syntax(tokens[_closing(tokens, 0) + 1])
        items: list[list[Token]] = [[]]
        depth = 0
        for token in tokens[1:-1]:
            depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(token.token_type, 0)
            if token.token_type == TokenType.COMMA and depth == 0:
                items.append([])
            else:
                items[-1].append(token)
        for item in items:
            if not item:
                raise _syntax(None)
            skipped = (TokenType.L_PAREN, TokenType.R_PAREN, TokenType.COMMA)
            rest = [t.text for t in item[1:] if t.token_type not in skipped]
            found.append((item[0].text.lower(), " ".join(rest) if rest else None))
        return found
    i = 0
    while i < len(tokens):  # the older syntax: WITH CSV HEADER DELIMITER ',' NULL '' ...
        word = tokens[i].text.lower()
        i += 1
        if word in ("binary", "csv"):
            found.append(("format", word))
        elif word == "header":
            found.append(("header", None))
        elif word == "force" and i < len(tokens) and tokens[i].text.lower() == "quote":
            names = [t.text for t in tokens[i + 1 :] if t.token_type != TokenType.COMMA]
            found.append(("force_quote", " ".join(names)))
            i = len(tokens)
        elif word in ("delimiter", "null", "quote", "escape", "encoding"):
            if i < len(tokens) and tokens[i].text.upper() == "AS":
                i += 1
            if i >= len(tokens) or tokens[i].token_type != TokenType.STRING:
                raise _syntax(tokens[i] if i < len(tokens) else None)
            found.append((word, tokens[i].text))
            i += 1
        else:
            raise _syntax(tokens[i - 1])
    return found


def _one_byte(name: str, value: str) -> str:
    if len(value.encode()) != 1:
        raise ReadError("0A000", f"COPY {name} must be a single one-byte character")
    return value


def parse_copy(sql: str, tokens: list[Token]) -> CopySpec:
    """What ``COPY …`` asks for; a COPY this read-only endpoint cannot serve is a ReadError."""
    query, i = _source(sql, tokens)
    direction = tokens[i].text.upper() if i < len(tokens) else ""
    if direction == "FROM":
        raise ReadError("25006", "cannot execute COPY FROM in a read-only transaction")
    if direction != "TO":
        raise _syntax(tokens[i] if i < len(tokens) else None)
    target = tokens[i + 1] if i + 1 < len(tokens) else None
    if target is not None and target.text.upper() == "PROGRAM":
        raise ReadError(
            "42501",
            "must be superuser or have privileges of the pg_execute_server_program role to COPY to or "
            "from an external program",
        )
    if target is not None and target.token_type == TokenType.STRING:
        raise ReadError(
            "42501",
            "must be superuser or have privileges of the pg_write_server_files role to COPY to a file; "
            "use COPY … TO STDOUT (psql: \\copy)",
        )
    if target is None or target.text.upper() != "STDOUT":
        raise _syntax(target)
    values: dict[str, str | None] = {}
    for name, value in _options(tokens[i + 2 :]):
        if name in values:
            raise ReadError("42601", "conflicting or redundant options")
        values[name] = value
    return _spec(query, values)


def _spec(query: str, values: dict[str, str | None]) -> CopySpec:
    known = {"format", "header", "delimiter", "null", "quote", "escape", "force_quote", "encoding"}
    for name in values:
        if name not in known:
            raise ReadError("42601", f'option "{name}" not recognized')
    fmt = (values.get("format") or "text").lower()
    if fmt == "binary":
        raise ReadError(
            "0A000", "COPY's binary format is not served by this endpoint; use FORMAT csv or text"
        )
    if fmt not in ("text", "csv"):
        raise ReadError("22023", f'COPY format "{fmt}" not recognized')
    csv = fmt == "csv"
    header_text = (values["header"] or "true").lower() if "header" in values else "false"
    if header_text == "match":
        raise ReadError("0A000", 'cannot use "match" with HEADER in COPY TO')
    if header_text not in _TRUE | _FALSE:
        raise ReadError("22023", "header requires a Boolean value")
    encoding = (values.get("encoding") or "UTF8").upper().replace("-", "")
    if encoding != "UTF8":
        raise ReadError("0A000", "COPY here sends UTF8 only, the server's encoding")
    for name in ("quote", "escape", "force_quote"):
        if name in values and not csv:
            raise ReadError("0A000", f"COPY {name.replace('_', ' ')} available only in CSV mode")

    def given(name: str, default: str) -> str:
        value = values.get(name)
        return default if value is None else value

    quote = _one_byte("quote", given("quote", '"'))
    force = values.get("force_quote")
    return CopySpec(
        query=query,
        csv=csv,
        header=header_text in _TRUE,
        delimiter=_one_byte("delimiter", given("delimiter", "," if csv else "\t")),
        null=given("null", "" if csv else "\\N"),
        quote=quote,
        escape=_one_byte("escape", given("escape", quote)),
        force_quote=tuple(force.replace(",", " ").lower().split()) if force else None,
    )


# --- the lines ---------------------------------------------------------------------------------------
_TEXT_ESCAPES = [(b"\\", b"\\\\"), (b"\n", b"\\n"), (b"\r", b"\\r"), (b"\t", b"\\t"), (b"\b", b"\\b"),
                 (b"\f", b"\\f"), (b"\v", b"\\v")]  # fmt: skip


def _text_field(value: bytes, delimiter: bytes) -> bytes:
    for raw, escaped in _TEXT_ESCAPES:
        if raw in value:
            value = value.replace(raw, escaped)
    if delimiter not in (b"\t", b"\\") and delimiter in value:
        value = value.replace(delimiter, b"\\" + delimiter)
    return value


def _csv_field(value: bytes, spec: CopySpec, forced: bool, single: bool) -> bytes:
    quote, escape = spec.quote.encode(), spec.escape.encode()
    specials = (spec.delimiter.encode(), quote, escape, b"\n", b"\r")
    # PostgreSQL quotes a value that holds a special byte, equals the NULL text, or is "\." alone.
    if (
        forced
        or value == spec.null.encode()
        or (single and value == b"\\.")
        or any(s in value for s in specials)
    ):
        if escape != quote:
            value = value.replace(escape, escape + escape)
        return quote + value.replace(quote, escape + quote) + quote
    return value


def copy_lines(result: ReadResult, spec: CopySpec) -> Iterator[bytes]:
    """The header (when asked for) and one line per row, each ending in a newline."""
    delimiter, null = spec.delimiter.encode(), spec.null.encode()
    single = len(result.columns) == 1
    force_all = spec.force_quote == ("*",)
    forced = [force_all or (name.lower() in (spec.force_quote or ())) for name in result.columns]

    def line(values: list[bytes | None], header: bool = False) -> bytes:
        fields = []
        for i, value in enumerate(values):
            if value is None:
                fields.append(null)
            elif spec.csv:
                fields.append(_csv_field(value, spec, forced[i] and not header, single))
            else:
                fields.append(_text_field(value, delimiter))
        return delimiter.join(fields) + b"\n"

    if spec.header:
        yield line([name.encode() for name in result.columns], header=True)
    row_encoders = encoders(result, [])
    for row in result.rows:
        yield line(encode_row(row, row_encoders))
