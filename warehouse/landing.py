"""Landing files: finding a source's drops and opening them as lazy frames of raw columns.

CSV and JSON Lines are read with every column as text, so that validation (not the reader) decides
what is wrong with a value and can quarantine that one row. Gzip files and non-UTF-8 text are
streamed to a temporary file first: memory stays bounded whatever the file size.

A file is read whole and literally: its path is never a glob, a symbolic link out of the landing
folder is refused, a file still being copied is left for a later run, and a row cut short (fewer
fields than the header, or a last line without its line end) is quarantined, never filled in.
"""

from __future__ import annotations

import codecs
import glob as globbing
import gzip
import itertools
import json
import re
import shutil
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from nightowl.errors import NightowlError
from nightowl.schemas.sources import SourceConfig

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_DATE_IN_NAME = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
#: A gzip file that inflates more than this many times over, past GZIP_BOMB_FLOOR bytes, is
#: refused: real exports compress 3-20 times, a decompression bomb thousands of times.
GZIP_MAX_RATIO = 200
GZIP_BOMB_FLOOR = 64 << 20
_UNICODE_BOMS = {
    codecs.BOM_UTF32_LE: "utf-32",
    codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16",
    codecs.BOM_UTF16_BE: "utf-16",
}
#: Name endings that copy and download tools give a file until it is complete (case-insensitive).
IN_PROGRESS_SUFFIXES = (
    ".part",
    ".partial",
    ".tmp",
    ".crdownload",
    ".filepart",
    "._copying_",
    ".download",
)
OUTSIDE_LINK = (
    "a symbolic link to a file outside the landing folder; refused (copy the file in instead)"
)
NO_LINE_END = "the last line has no line end (the file may still be being copied)"
LAST_LINE_NOT_JSON = "the last line is not whole JSON (it may have been cut short)"
#: Columns the reader adds beside a file's own (never file columns; ingest carries them along).
MAYBE_SHORT = "_nightowl_maybe_short"  # CSV: the header's last column is empty in this row
SHAPES = "_nightowl_shapes"  # CSV: which open file the row is from (see truncation_reasons)
TRUNCATED = "_nightowl_truncated"  # JSON Lines: why the row is cut short, null when whole
READER_COLUMNS = (MAYBE_SHORT, SHAPES, TRUNCATED)


class LandingError(NightowlError):
    """A landing file that cannot be read at all; the message names the file and the expectation."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class LandingFile:
    """One file dropped for a source, with what its name says about it."""

    path: Path
    format: str | None
    compressed: bool
    date: date | None
    #: Why the file cannot be read (opening it raises a LandingError saying so).
    problem: str | None = None
    #: Why the file is left for a later run: it is still being copied (never read meanwhile).
    waiting: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


def landing_files(
    source: str,
    cfg: SourceConfig,
    run_date: date,
    data_root: Path,
    config_dir: Path,
    *,
    now: float | None = None,
    include_waiting: bool = False,
) -> list[LandingFile]:
    """The source's files that have arrived as of ``run_date``, oldest first.

    A file whose name carries a date (``2026-11-27.csv``) belongs to that day's export and is
    only seen by runs for that date or later — or up to ``cfg.plans_ahead_days`` earlier, when it
    is a plan; a file without a date in its name is always seen.

    A file still being copied — named ``*.part``, ``*.tmp``… (``IN_PROGRESS_SUFFIXES``), or
    changed less than ``cfg.settle_seconds`` before ``now`` (seconds since the epoch; default:
    the time now) — is left out, or with ``include_waiting`` returned with ``waiting`` saying why.
    A file whose real path (links followed) is outside both the landing folder and the data root
    gets ``problem`` set, without a byte of it read.
    """
    if cfg.landing is None:
        folder, pattern = data_root / "landing" / source, cfg.glob
    else:
        where = Path(cfg.landing).expanduser()
        where = where if where.is_absolute() else config_dir / where
        if where.is_dir():
            folder, pattern = where, cfg.glob
        elif where.is_file():  # one file named literally, brackets and all
            folder, pattern = where.parent, globbing.escape(where.name)
        else:
            folder, pattern = where.parent, where.name
    if not folder.is_dir():
        return []
    now = time.time() if now is None else now
    allowed = (folder.resolve(), Path(data_root).resolve())
    found = []
    for path in sorted(folder.glob(pattern)):
        if not path.is_file() or path.name.startswith("."):
            continue
        file_date = date_in_name(path.name)
        if file_date is not None and file_date > run_date + timedelta(days=cfg.plans_ahead_days):
            continue
        fmt, compressed, problem = _format_of(path, cfg)
        waiting = _copying(path.name)
        real = path.resolve()
        if waiting is None and not any(real.is_relative_to(root) for root in allowed):
            problem = OUTSIDE_LINK
        elif waiting is None:
            waiting = _settling(path, cfg.settle_seconds, now)
        if waiting is not None:
            if not include_waiting:
                continue
            problem = None
        found.append(LandingFile(path, fmt, compressed, file_date, problem, waiting))
    return sorted(found, key=lambda f: (f.date or date.min, f.name))


def _copying(name: str) -> str | None:
    """Why a file's name says it is still being copied, or None."""
    lower = name.lower()
    suffix = next((s for s in IN_PROGRESS_SUFFIXES if lower.endswith(s)), None)
    if suffix is None:
        return None
    return (
        f"its name ends in {name[-len(suffix) :]}, so it is still being copied; waiting for the "
        "copy to finish"
    )


def _settling(path: Path, settle_seconds: float, now: float) -> str | None:
    """Why a file changed too recently to be read, or None."""
    if settle_seconds <= 0:
        return None
    age = now - path.stat().st_mtime
    if age >= settle_seconds:
        return None
    return (
        f"changed {max(age, 0):.0f} s ago; waiting for it to settle "
        f"(settle_seconds = {settle_seconds:g})"
    )


def _format_of(path: Path, cfg: SourceConfig) -> tuple[str | None, bool, str | None]:
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    if cfg.format != "auto":
        return cfg.format, compressed, None
    fmt = EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        known = ", ".join(sorted(EXTENSIONS))
        problem = (
            f"cannot tell the format from the extension; expected one of {known} "
            "(optionally .gz), or set `format` for this source in nightowl.toml"
        )
        return None, compressed, problem
    return fmt, compressed, None


def date_in_name(name: str) -> date | None:
    """The first YYYY-MM-DD date in a file name, if there is a valid one."""
    match = _DATE_IN_NAME.search(name)
    if not match:
        return None
    try:
        return date(*(int(g) for g in match.groups()))
    except ValueError:
        return None


@dataclass(frozen=True)
class Opened:
    """An open landing file: its rows, and whether text had bytes that are not UTF-8."""

    rows: pl.LazyFrame
    #: True when the text was decoded with replacement characters (U+FFFD) for invalid bytes.
    lossy: bool
    #: False when no value can hold a NUL character (text files without one): no need to look.
    nul_possible: bool = True
    #: CSV: the shape of the file's records, to tell which row a reader error is about.
    shapes: RowShapes | None = None


@contextmanager
def open_landing(file: LandingFile, cfg: SourceConfig, tmp_dir: Path) -> Iterator[Opened]:
    """The file's rows as a lazy frame, raw columns as they are named in the file, beside the
    reader's own ``READER_COLUMNS`` (see :func:`truncation_reasons`)."""
    if file.problem is not None:
        raise LandingError(file.path, file.problem)
    if file.waiting is not None:
        raise LandingError(file.path, f"{file.waiting}; not read")
    staged: list[Path] = []
    key = None
    try:
        path = file.path
        if file.compressed:
            path = _gunzip(path, tmp_dir)
            staged.append(path)
        if file.format in ("csv", "jsonl") and codecs.lookup(cfg.encoding).name != "utf-8":
            path = _to_utf8(path, cfg.encoding, tmp_dir, shown=file.path)
            staged.append(path)
        if path.stat().st_size == 0:
            if file.format != "jsonl":
                raise LandingError(file.path, "the file is empty; expected at least a header row")
            yield Opened(pl.LazyFrame(), lossy=False)  # JSON Lines has no header: zero rows
            return
        if file.format == "parquet":
            yield Opened(_scan(path, file, cfg), lossy=False)
            return
        if codecs.lookup(cfg.encoding).name == "utf-8":
            _refuse_other_unicode(path, shown=file.path)
        text = scanned_text(path, json_escapes=file.format == "jsonl")
        if not text.utf8 and file.format == "jsonl":
            # The JSON reader refuses a file with one bad byte; CSV's reader decodes lossily.
            path = _lossy_utf8(path, tmp_dir)
            staged.append(path)
        if file.format == "jsonl":
            whole, cut = _complete_lines(path, tmp_dir, shown=file.path)
            if whole != path:
                staged.append(whole)
            lf = _scan(whole, file, cfg)
            if cut is not None:  # the cut line is one more row, quarantined as truncated
                lf = pl.concat(
                    [lf, pl.LazyFrame({TRUNCATED: [f"truncated: {cut}"]})], how="diagonal"
                )
            yield Opened(lf, lossy=not text.utf8, nul_possible=text.nul)
            return
        lf = _scan(path, file, cfg)
        shapes = RowShapes.of(path, file.path, lf, _separator(file, cfg))
        key = next(_KEYS)
        _OPEN_SHAPES[key] = shapes
        names = lf.collect_schema().names()
        # A row with fewer fields than the header reads its last column as empty: only such rows
        # (and an unterminated last line) send validation to the file to count their fields.
        maybe_short = pl.col(names[-1]).is_null() if len(names) > 1 else pl.lit(False)
        lf = lf.with_columns(maybe_short.alias(MAYBE_SHORT), pl.lit(key, pl.UInt32).alias(SHAPES))
        yield Opened(lf, lossy=not text.utf8, nul_possible=text.nul, shapes=shapes)
    finally:
        if key is not None:
            del _OPEN_SHAPES[key]
        for p in staged:
            p.unlink(missing_ok=True)


def _separator(file: LandingFile, cfg: SourceConfig) -> str:
    # A .tsv file is tab-separated unless the config says otherwise.
    tab = file.path.name.lower().removesuffix(".gz").endswith(".tsv")
    return "\t" if tab and "delimiter" not in cfg.model_fields_set else cfg.delimiter


def _literal(path: Path) -> str:
    """``path`` for a reader that takes any path as a glob (JSON Lines): metacharacters escaped."""
    return re.sub(r"([\[\]*?])", r"[\1]", str(path))


def _scan(path: Path, file: LandingFile, cfg: SourceConfig) -> pl.LazyFrame:
    if file.format is None:  # such a file has a problem, which open_landing raises first
        raise LandingError(file.path, file.problem or "cannot tell the format of the file")
    try:
        if file.format == "csv":
            lf = pl.scan_csv(
                path,
                glob=False,
                infer_schema=False,
                separator=_separator(file, cfg),
                null_values=cfg.null_values,
                encoding="utf8-lossy",  # bad bytes become U+FFFD; validation quarantines those rows
                raise_if_empty=True,
            )
        elif file.format == "jsonl":
            literal = _literal(path)
            names = pl.scan_ndjson(literal, infer_schema_length=10_000).collect_schema().names()
            lf = pl.scan_ndjson(literal, schema=dict.fromkeys(names, pl.String)).with_columns(
                # "" and the other null spellings are missing values, as they are in CSV.
                pl.when(pl.col(n).is_in(cfg.null_values)).then(None).otherwise(pl.col(n)).alias(n)
                for n in names
            )
        else:
            lf = pl.scan_parquet(path, glob=False)
        lf.collect_schema()
        return lf
    except pl.exceptions.NoDataError as exc:
        raise LandingError(file.path, "the file is empty; expected at least a header row") from exc
    except (pl.exceptions.PolarsError, OSError) as exc:
        what = {"csv": "CSV", "jsonl": "JSON Lines", "parquet": "Parquet"}[file.format]
        problem = f"not a readable {what} file ({_first_line(exc)})"
        if file.format == "jsonl" and _starts_with(path, b"["):
            problem += "; it holds a JSON array, expected one JSON object per line"
        raise LandingError(file.path, problem) from exc


def _starts_with(path: Path, prefix: bytes) -> bool:
    with path.open("rb") as fh:
        return fh.read(64).lstrip().startswith(prefix)


def _ends_with_line_end(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"


def _complete_lines(path: Path, tmp_dir: Path, shown: Path) -> tuple[Path, str | None]:
    """A JSON Lines file without a cut last line: ``path`` itself and None when its last line is
    whole JSON; else a copy without that line, and why the line is cut.

    Lines are cut at the end of a file (a copy or a writer stopped mid-line), so the last line is
    looked at alone: a line without its line end is fine when it is whole JSON (some writers
    leave the last line end out; a cut object never is). A file of one bad line is refused (by
    the reader, or here when the line has no line end)."""
    with path.open("rb") as fh:
        start = fh.seek(0, 2)
        tail = b""
        while start > 0 and b"\n" not in tail.rstrip():  # back a block at a time
            step = min(start, 1 << 16)
            start -= step
            fh.seek(start)
            tail = fh.read(step) + tail
        content = tail.rstrip()
        head = start + content.rfind(b"\n") + 1  # where the last line starts: 0 if the only one
        fh.seek(head)
        last = fh.read(len(content) - (head - start))
    terminated = b"\n" in tail[len(content) :]
    if not last.strip() or _is_json(last):
        return path, None
    if head == 0:
        if terminated:
            return path, None
        raise LandingError(
            shown,
            "not a readable JSON Lines file: its only line is not whole JSON and has no line end "
            "(the file may still be being copied)",
        )
    out = tmp_dir / f".tmp-{uuid.uuid4().hex}{path.suffix}"
    with path.open("rb") as src, out.open("wb") as dst:
        remaining = head
        while remaining and (chunk := src.read(min(remaining, 16 << 20))):
            dst.write(chunk)
            remaining -= len(chunk)
    return out, LAST_LINE_NOT_JSON if terminated else NO_LINE_END


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:  # UnicodeDecodeError too
        return False
    except RecursionError:  # deeper than Python parses: the reader decides
        return True
    return True


#: Open CSV files' row shapes, by the key their rows carry in the SHAPES column.
_OPEN_SHAPES: dict[int, RowShapes] = {}
_KEYS = itertools.count(1)


def truncation_reasons(batch: pl.DataFrame, row: str) -> pl.Series | None:
    """Why each row of a batch read through :func:`open_landing` is cut short (null where it is
    whole), or None when none is; ``row`` names the batch's 1-based row number column.

    A CSV row is cut short when it has fewer fields than the header or is on a last line without
    its line end; a JSON Lines row when it is such a last line. The CSV reader fills a missing
    field as an empty one, so the file's bytes are counted — once, and only when a row of the
    file reads its last column as empty or the file has no final line end."""
    if TRUNCATED in batch.columns:
        cut = batch[TRUNCATED]
        return None if cut.null_count() == batch.height else cut
    if SHAPES not in batch.columns or batch.height == 0:
        return None
    shapes = _OPEN_SHAPES.get(batch[SHAPES][0])
    if shapes is None:
        raise RuntimeError("rows of a landing file were validated after the file was closed")
    return shapes.reasons(batch[row], batch[MAYBE_SHORT])


@dataclass
class RowShapes:
    """How many fields a CSV file's records have: counted from its bytes when first asked."""

    path: Path  # the bytes read (a staged copy of a gzip or non-UTF-8 file)
    shown: Path  # the landing file, for messages
    separator: str
    fields: int  # the header's
    rows: pl.LazyFrame  # the reader's rows, to check the count agrees with the reader's
    #: Row number (1-based) of an unterminated last line, if the file has one.
    last_row: int | None = None
    _odd: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def of(cls, path: Path, shown: Path, rows: pl.LazyFrame, separator: str) -> RowShapes:
        """The shapes of the file at ``path``, read as ``rows`` (an unterminated last line is
        found now: one look at the last byte, and a row count only when it is not a line end)."""
        fields = len(rows.collect_schema())
        if _ends_with_line_end(path):
            return cls(path, shown, separator, fields, rows)
        try:
            last = rows.select(pl.len()).collect().item()  # the reader counts rows fast
        except pl.exceptions.PolarsError as exc:
            raise LandingError(shown, f"not a readable CSV file ({_first_line(exc)})") from exc
        return cls(path, shown, separator, fields, rows, last_row=last or None)

    def odd_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Numbers of the rows (1-based, ascending) whose field count is not the header's, and
        their field counts; a LandingError when the bytes and the reader disagree on rows."""
        with self._lock:  # batches may be validated in threads: count once
            if self._odd is None:
                self._odd = self._count()
            return self._odd

    def _count(self) -> tuple[np.ndarray, np.ndarray]:
        records, numbers, counts = record_fields(self.path, self.separator, self.fields)
        read = self.rows.select(pl.len()).collect().item()
        if records - 1 != read or (len(numbers) and numbers[0] == 0):
            raise LandingError(
                self.shown,
                f"its rows cannot be told apart: counting line ends outside quotes gives "
                f"{max(records - 1, 0):,} rows where the CSV reader reads {read:,} (a quote "
                f"inside an unquoted value?); expected every row to have {self.fields} fields",
            )
        return numbers, counts

    def reasons(self, rows: pl.Series, maybe_short: pl.Series) -> pl.Series | None:
        """Why each of these rows (consecutive numbers) is cut short, null where it is whole;
        None when none is. ``maybe_short``: the row reads the header's last column as empty."""
        first, last = rows[0], rows[-1]
        at_end = self.last_row is not None and first <= self.last_row <= last
        if not at_end and not maybe_short.any():
            return None
        cut: dict[int, str] = {}
        if maybe_short.any():
            numbers, counts = self.odd_rows()
            lo, hi = np.searchsorted(numbers, [first, last + 1])
            for number, count in zip(numbers[lo:hi], counts[lo:hi], strict=True):
                # Never more fields here: the reader refuses those rows.
                if count < self.fields and maybe_short[int(number - first)]:
                    cut[int(number - first)] = (
                        f"{count} field{'s' if count != 1 else ''} where the header has "
                        f"{self.fields}"
                    )
        if at_end:
            at = self.last_row - first
            cut[at] = f"{cut[at]}, and {NO_LINE_END}" if at in cut else NO_LINE_END
        if not cut:
            return None
        where = pl.Series(list(cut), dtype=pl.UInt32)
        why = pl.Series([f"truncated: {r}" for r in cut.values()], dtype=pl.String)
        return pl.Series(TRUNCATED, [None] * len(rows), dtype=pl.String).scatter(where, why)

    def long_row(self) -> str | None:
        """Which row has more fields than the header (the first), or None if none is seen."""
        numbers, counts = record_fields(self.path, self.separator, self.fields, shortcut=False)[1:]
        longer = np.flatnonzero(counts > self.fields)
        if not len(longer):
            return None
        number, count = int(numbers[longer[0]]), int(counts[longer[0]])
        return (
            f"row {number} has {count} fields where the header has {self.fields}; expected one "
            "field per header column (a value holding the separator must be in quotes)"
        )


#: Bytes read at a time by :func:`record_fields`.
RECORD_CHUNK = 16 << 20


def record_fields(
    path: Path, separator: str, expected: int, *, shortcut: bool = True
) -> tuple[int, np.ndarray, np.ndarray]:
    """One pass over a CSV file's bytes: its number of records (the header is record 0), and
    which records have other than ``expected`` fields (ascending), with their field counts.
    With ``shortcut``, a stretch without quotes whose separators add up is taken as whole: a
    record with fewer fields there is missed only beside one with more, which the reader refuses.

    As the CSV reader splits a file into rows, a record ends at a line end outside quotes, every
    quote character opening or closing quotes. Fields are split by separators outside quotes,
    except in the few records with other than ``expected`` fields that hold a quote: the reader
    opens quotes only at the start of a field, so these are counted again its way."""
    sep, quote, eol = separator.encode()[0], ord('"'), ord("\n")
    inside = 0  # quote parity at the start of a chunk
    fields = 1  # fields of the record open at the start of a chunk
    opened_at = 0  # where that record starts in the file
    quoted = False  # whether it holds a quote so far
    base = records = 0
    numbers, counts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    recount: list[tuple[int, int, int, int]] = []  # (part, index in it, start, stop)
    with path.open("rb") as fh:
        while data := fh.read(RECORD_CHUNK):
            a = np.frombuffer(data, np.uint8)
            last = data.rfind(b"\n")
            if shortcut and not inside and b'"' not in data and last >= 0:
                # No quotes: when the separators add up, every record here has the header's
                # fields (or one has more, which the reader refuses): no need to split them.
                split = np.count_nonzero(a[:last] == sep)
                lines = int(np.count_nonzero(a[:last] == eol)) + 1
                if fields - 1 + split == (expected - 1) * lines:
                    records += lines
                    fields = 1 + int(np.count_nonzero(a[last:] == sep))
                    opened_at, quoted = base + last + 1, False
                    base += len(a)
                    continue
            at_quotes = np.flatnonzero(a == quote)
            seps, ends = np.flatnonzero(a == sep), np.flatnonzero(a == eol)
            if inside or len(at_quotes):  # inside quotes: an odd number of quotes before
                seps = seps[(np.searchsorted(at_quotes, seps) + inside) % 2 == 0]
                ends = ends[(np.searchsorted(at_quotes, ends) + inside) % 2 == 0]
                inside = (inside + len(at_quotes)) % 2
            if not len(ends):
                fields += len(seps)
                quoted = quoted or bool(len(at_quotes))
                base += len(a)
                continue
            before = np.searchsorted(seps, ends)
            per = np.diff(before, prepend=0) + 1
            per[0] += fields - 1
            odd = np.flatnonzero(per != expected)
            starts = np.concatenate([[0], ends[:-1] + 1])
            held = np.searchsorted(at_quotes, ends[odd]) - np.searchsorted(at_quotes, starts[odd])
            for j in np.flatnonzero((held > 0) | ((odd == 0) & quoted)):
                k = int(odd[j])
                begin = opened_at if k == 0 else base + int(starts[k])
                recount.append((len(numbers), int(j), begin, base + int(ends[k])))
            numbers.append(odd + records)
            counts.append(per[odd])
            records += len(ends)
            fields = 1 + len(seps) - int(before[-1])
            opened_at = base + int(ends[-1]) + 1
            quoted = bool(len(at_quotes)) and int(at_quotes[-1]) > int(ends[-1])
            base += len(a)
    if base > opened_at:  # a last record without a line end
        if fields != expected:
            if quoted:
                recount.append((len(numbers), 0, opened_at, base))
            numbers.append(np.array([records], np.int64))
            counts.append(np.array([fields], np.int64))
        records += 1
    if recount:
        with path.open("rb") as fh:
            for part, index, begin, stop in recount:
                fh.seek(begin)
                counts[part][index] = _fields_of(fh.read(stop - begin), sep, quote)
    number, count = np.concatenate(numbers), np.concatenate(counts)
    keep = count != expected
    return records, number[keep], count[keep]


def _fields_of(record: bytes, sep: int, quote: int) -> int:
    """The fields of one record as the CSV reader splits it: quotes count only in a field that
    starts with one, and there every quote opens or closes quotes."""
    count, i, end = 1, 0, len(record)
    while i < end:
        if record[i] == quote:
            opened = False
            while i < end and (opened or record[i] != sep):
                opened ^= record[i] == quote
                i += 1
        else:
            i = record.find(sep, i)
            if i < 0:
                break
        if i < end:  # at a separator
            count += 1
            i += 1
    return count


@dataclass(frozen=True)
class TextScan:
    """What one pass over a text file's bytes tells."""

    utf8: bool  # valid UTF-8 throughout
    nul: bool  # a value may hold a NUL character: a NUL byte, or a JSON escape of one


#: Bytes read at a time by :func:`scanned_text`.
SCAN_CHUNK = 1 << 20
_NUL_ESCAPE = b"\\u0000"


def scanned_text(path: Path, *, json_escapes: bool = False) -> TextScan:
    """Whether a text file is valid UTF-8 and whether it may hold a NUL character (with
    ``json_escapes``, also written as ``\\u0000``): one streaming pass at C speed.

    Looking for NUL here, a memchr over the bytes, saves looking in every value of every text
    column (0.6-0.9 s of ingesting 10M CSV rows). A false alarm (``\\\\u0000``, an escaped
    backslash) only means the values are looked at."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8, nul, tail = True, False, b""
    with path.open("rb") as fh:
        while chunk := fh.read(SCAN_CHUNK):
            if not nul:
                nul = b"\x00" in chunk or (
                    json_escapes and (_NUL_ESCAPE in chunk or _NUL_ESCAPE in tail + chunk[:5])
                )
                if json_escapes:  # an escape split between chunks (of any size)
                    tail = (tail + chunk[-5:])[-5:]
            # ASCII is UTF-8, and telling ASCII is many times faster than decoding: only a chunk
            # with other bytes, or one after a character split between chunks, is decoded.
            if not utf8 or (chunk.isascii() and not decoder.getstate()[0]):
                continue
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                utf8 = False
    if utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    return TextScan(utf8=utf8, nul=nul)


def _lossy_utf8(path: Path, tmp_dir: Path) -> Path:
    """A copy of ``path`` with every byte sequence that is not UTF-8 replaced by U+FFFD, so the
    rows holding one can be quarantined instead of the whole file failing."""
    out = tmp_dir / f".tmp-{uuid.uuid4().hex}{path.suffix}"
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with path.open("rb") as src, out.open("w", encoding="utf-8") as dst:
        while chunk := src.read(16 << 20):
            dst.write(decoder.decode(chunk))
        dst.write(decoder.decode(b"", final=True))
    return out


def _refuse_other_unicode(path: Path, shown: Path) -> None:
    """A LandingError when the text starts with a UTF-16 or UTF-32 byte order mark."""
    with path.open("rb") as fh:
        head = fh.read(4)
    for bom, name in _UNICODE_BOMS.items():
        if head.startswith(bom):
            raise LandingError(
                shown,
                f"the text is {name.upper()} (it starts with its byte order mark), not UTF-8; "
                f'set encoding = "{name}" for this source in nightowl.toml',
            )


def _gunzip(path: Path, tmp_dir: Path) -> Path:
    out = tmp_dir / f".tmp-{uuid.uuid4().hex}{''.join(path.suffixes[:-1])}"
    limit = max(GZIP_BOMB_FLOOR, GZIP_MAX_RATIO * path.stat().st_size)
    try:
        with gzip.open(path, "rb") as src, out.open("wb") as dst:
            while chunk := src.read(4 << 20):
                dst.write(chunk)
                if dst.tell() > limit:
                    raise _GzipBomb(dst.tell())
    except _GzipBomb as bomb:
        out.unlink(missing_ok=True)
        raise LandingError(
            path,
            f"inflates to more than {bomb.size:,} bytes from {path.stat().st_size:,} "
            f"(over {GZIP_MAX_RATIO} times its size): refused as a decompression bomb; "
            "expected a gzip file of ordinary text",
        ) from None
    except (EOFError, OSError, zlib.error) as exc:
        out.unlink(missing_ok=True)
        raise LandingError(
            path, f"truncated or corrupt gzip ({_first_line(exc)}); expected a complete gzip file"
        ) from exc
    return out


class _GzipBomb(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


def _to_utf8(path: Path, encoding: str, tmp_dir: Path, shown: Path) -> Path:
    out = tmp_dir / f".tmp-{uuid.uuid4().hex}{path.suffix}"
    try:
        with (
            path.open(encoding=encoding, newline="") as src,
            out.open("w", encoding="utf-8") as dst,
        ):
            shutil.copyfileobj(src, dst, length=4 << 20)
    except UnicodeDecodeError as exc:
        out.unlink(missing_ok=True)
        raise LandingError(shown, f"bytes that are not {encoding} at offset {exc.start}") from exc
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def reader_problem(exc: BaseException, opened: Opened | None = None) -> str:
    """What a reader's error says went wrong, in one line without its advice on reader options
    (Polars suggests settings such as ``ignore_errors``, which would drop rows silently).

    With the ``opened`` file the error is from, a row with more fields than the header is named
    (the reader does not say which)."""
    text = str(exc)
    if opened is not None and opened.shapes is not None and "more fields than" in text:
        long_row = opened.shapes.long_row()
        if long_row is not None:
            return long_row
    if "Original error:" in text:
        text = text.split("Original error:", 1)[1].strip().strip("`")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kept = [line for line in lines if not line.lower().startswith(("consider", "- ", "you might"))]
    shown = " ".join(kept) or type(exc).__name__
    return shown if len(shown) <= 300 else shown[:297] + "..."


#: Where a FAQ knowledge base is looked for when ``feedback.faq`` names none.
KNOWLEDGE_BASE_DIR = "knowledge_base"
KNOWLEDGE_BASE_NAMES = ("faq.md", "faq.csv")


def knowledge_base(
    data_root: str | Path, config_dir: str | Path, path: str | None
) -> tuple[str, str] | None:
    """The text of the FAQ knowledge base and the name to show in messages: ``path`` (relative
    to the config folder), else ``<data_root>/landing/knowledge_base/faq.md`` (or ``faq.csv``)
    when present, else None. A named file that is missing or not UTF-8 is a LandingError."""
    if path is None:
        folder = Path(data_root) / "landing" / KNOWLEDGE_BASE_DIR
        found = [folder / n for n in KNOWLEDGE_BASE_NAMES if (folder / n).is_file()]
        if not found:
            return None
        full = found[0]
    else:
        full = Path(config_dir) / Path(path).expanduser()
    try:
        return full.read_text(encoding="utf-8"), str(full)
    except FileNotFoundError as exc:
        raise LandingError(full, "FAQ file not found (feedback.faq in nightowl.toml)") from exc
    except UnicodeDecodeError as exc:
        raise LandingError(full, f"bytes that are not UTF-8 at offset {exc.start}") from exc
