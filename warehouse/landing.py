"""Landing files: finding a source's drops and opening them as lazy frames of raw columns.

CSV and JSON Lines are read with every column as text, so that validation (not the reader) decides
what is wrong with a value and can quarantine that one row. Gzip files and non-UTF-8 text are
streamed to a temporary file first: memory stays bounded whatever the file size.
"""

from __future__ import annotations

import codecs
import gzip
import re
import shutil
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from schemas.config import SourceConfig

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


class LandingError(Exception):
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
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.path.name


def landing_files(
    source: str, cfg: SourceConfig, run_date: date, data_root: Path, config_dir: Path
) -> list[LandingFile]:
    """The source's files that have arrived as of ``run_date``, oldest first.

    A file whose name carries a date (``2026-11-27.csv``) belongs to that day's export and is
    only seen by runs for that date or later — or up to ``cfg.plans_ahead_days`` earlier, when it
    is a plan; a file without a date in its name is always seen.
    """
    if cfg.landing is None:
        folder, pattern = data_root / "landing" / source, cfg.glob
    else:
        where = Path(cfg.landing).expanduser()
        where = where if where.is_absolute() else config_dir / where
        folder, pattern = (where, cfg.glob) if where.is_dir() else (where.parent, where.name)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob(pattern)):
        if not path.is_file() or path.name.startswith("."):
            continue
        fmt, compressed, problem = _format_of(path, cfg)
        file_date = date_in_name(path.name)
        if file_date is None or file_date <= run_date + timedelta(days=cfg.plans_ahead_days):
            found.append(LandingFile(path, fmt, compressed, file_date, problem))
    return sorted(found, key=lambda f: (f.date or date.min, f.name))


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


@contextmanager
def open_landing(file: LandingFile, cfg: SourceConfig, tmp_dir: Path) -> Iterator[Opened]:
    """The file's rows as a lazy frame, raw columns as they are named in the file."""
    if file.problem is not None:
        raise LandingError(file.path, file.problem)
    staged: list[Path] = []
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
        yield Opened(_scan(path, file, cfg), lossy=not text.utf8, nul_possible=text.nul)
    finally:
        for p in staged:
            p.unlink(missing_ok=True)


def _scan(path: Path, file: LandingFile, cfg: SourceConfig) -> pl.LazyFrame:
    try:
        if file.format == "csv":
            tab = file.path.name.lower().removesuffix(".gz").endswith(".tsv")
            lf = pl.scan_csv(
                path,
                infer_schema=False,
                # A .tsv file is tab-separated unless the config says otherwise.
                separator="\t"
                if tab and "delimiter" not in cfg.model_fields_set
                else cfg.delimiter,
                null_values=cfg.null_values,
                encoding="utf8-lossy",  # bad bytes become U+FFFD; validation quarantines those rows
                raise_if_empty=True,
            )
        elif file.format == "jsonl":
            names = pl.scan_ndjson(path, infer_schema_length=10_000).collect_schema().names()
            lf = pl.scan_ndjson(path, schema=dict.fromkeys(names, pl.String)).with_columns(
                # "" and the other null spellings are missing values, as they are in CSV.
                pl.when(pl.col(n).is_in(cfg.null_values)).then(None).otherwise(pl.col(n)).alias(n)
                for n in names
            )
        else:
            lf = pl.scan_parquet(path)
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


def reader_problem(exc: BaseException) -> str:
    """What a reader's error says went wrong, in one line without its advice on reader options
    (Polars suggests settings such as ``ignore_errors``, which would drop rows silently)."""
    text = str(exc)
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
