"""Ingest landing files into the Parquet lake of canonical events; bad rows go to quarantine.

One landing file at a time: read it with DuckDB into a staging table, map its columns onto the canonical
event (sql/staging/stg_events.sql) and split rows into loaded / quarantined / duplicates / held back. The
loaded events of every file of the run are gathered and written to the lake once, at the end, one file per
event_date the run touches (not one per landing file per date: a lake of ~250-row files is slow to read);
only then are the run's files recorded in the manifest, so an unchanged file is never ingested twice and a
file is never marked done before its rows are in the lake.

A landing file whose content changed at the same path is a new version of the same rows: it replaces what
the earlier version left (its rows in the lake, its quarantine records, its held-back rows), counted as
`replaced`, and is read before the run's other files so that they are compared with the lake without them.

A valid row later than the run's limit (as_of + quality.max_future) is held back in state/held/ as a
canonical event, never quarantined; the first run whose limit passes it moves it into the lake (released)
without reading the landing file again. So every row is counted once over the sequence of runs: read =
loaded + quarantined + duplicates + held in the run that reads it, and each held row is released once.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from journeys import db, lake, models, phones, pii, progress
from journeys.config import PII_TYPES, Settings, SourceConfig, parse_duration_us

log = logging.getLogger(__name__)

# Not starting with a dot: a batch id names a folder (state/raw-handoff/<batch>), which '.' or '..' would not be.
_BATCH_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
_HASH_CHUNK = 1 << 20

# Static helper SQL (no values inside): identifier normalisation (redaction macros come from journeys.pii).
_MACROS = r"""
create or replace temp macro journeys_snake(v) as
    trim(regexp_replace(lower(trim(v)), '[^a-z0-9]+', '_', 'g'), '_');

-- A phone arrives here already in E.164 (journeys.phones, once per distinct raw value).
create or replace temp macro journeys_identifier(id_type, v, salt) as
    case id_type
        when 'email' then sha256(salt || nullif(lower(trim(v)), ''))
        when 'phone' then sha256(salt || nullif(v, ''))
        else nullif(trim(v), '')
    end;

"""

ID_LIST_TYPE = "struct(id_type varchar, id_value varchar)[]"

EVENT_SCHEMA: dict[str, str] = {
    "event_id": "varchar",
    "occurred_at": "timestamp",
    "event_date": "date",
    "source": "varchar",
    "channel": "varchar",
    "event_type": "varchar",
    "touchpoint": "varchar",
    "identifiers": ID_LIST_TYPE,
    "sentiment": "double",
    "revenue": "decimal(18, 2)",
    "attributes": "json",
    "ingested_at": "timestamp",
    "batch_id": "varchar",
    "source_file": "varchar",
    "source_line": "bigint",
}
"""Canonical event columns and their DuckDB types, in the order they are written to the lake."""

EVENT_COLUMNS = tuple(EVENT_SCHEMA)

LINK_SCHEMA: dict[str, str] = {
    "link_id": "varchar",
    "source": "varchar",
    "identifiers": ID_LIST_TYPE,
    "ingested_at": "timestamp",
    "batch_id": "varchar",
    "source_file": "varchar",
    "source_line": "bigint",
}
"""Identifier links of `kind: links` sources and their DuckDB types, in the order they are written."""

LINK_COLUMNS = tuple(LINK_SCHEMA)

QUARANTINE_SCHEMA: dict[str, str] = {
    "source": "varchar",
    "source_file": "varchar",
    "line": "bigint",
    "field": "varchar",
    "column": "varchar",
    "reason": "varchar",
    "raw": "varchar",
    "batch_id": "varchar",
    "quarantined_at": "timestamp",
}
"""Quarantine columns and their DuckDB types, in the order they are written."""

QUARANTINE_COLUMNS = tuple(QUARANTINE_SCHEMA)


@dataclass
class FileReport:
    """Row accounting of one landing file."""

    source: str
    file: str
    read: int
    loaded: int
    quarantined: int
    duplicates: int
    skipped: bool
    new_columns: list[str] = field(default_factory=list)
    blank: int = 0
    """Blank rows (only white space, delimiters or quotes): skipped, outside `read`."""
    filtered: int = 0
    """Rows left out by the source's `keep_rows` filters, outside `read`."""
    events: int = 0
    """Events loaded from the `loaded` rows (several per row when the source lists `events`; 0 for links)."""
    events_skipped: int = 0
    """Optional events of loaded or duplicate rows whose time was empty: not events, not quarantined."""
    not_ready: str | None = None
    """Why the file was left for a later run (still being written); nothing of it was loaded."""
    refused: str | None = None
    """Why ingest refused the file (too wide, unreadable); nothing of it was loaded, later runs try it again."""
    held: int = 0
    """Valid rows later than the run's limit, kept in state/held/ until a run's as_of passes them."""
    replaced: int = 0
    """Rows of the file's earlier version taken out (loaded, quarantined or held back); not part of `read`."""


@dataclass
class IngestReport:
    """Row accounting of one ingest batch."""

    batch_id: str
    files: list[FileReport] = field(default_factory=list)
    affected_dates: list[date] = field(default_factory=list)
    released: int = 0
    """Rows held back by earlier runs that this run's limit passed: loaded now, not part of `read`."""
    still_held: int = 0
    """Rows held back after this run (of every run so far), waiting for a later as_of."""

    @property
    def read(self) -> int:
        return sum(f.read for f in self.files)

    @property
    def loaded(self) -> int:
        return sum(f.loaded for f in self.files)

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.files)

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def blank(self) -> int:
        return sum(f.blank for f in self.files)

    @property
    def held(self) -> int:
        return sum(f.held for f in self.files)

    @property
    def filtered(self) -> int:
        return sum(f.filtered for f in self.files)

    @property
    def replaced(self) -> int:
        return sum(f.replaced for f in self.files)

    @property
    def events(self) -> int:
        return sum(f.events for f in self.files)

    def sources_refused(self) -> list[str]:
        """Sources of which every landing file this run tried to read was refused: likely a wrong mapping."""
        tried: dict[str, list[FileReport]] = {}
        for f in self.files:
            if not f.skipped or f.refused:
                tried.setdefault(f.source, []).append(f)
        return sorted(name for name, files in tried.items() if all(f.refused for f in files))

    def accounting_ok(self) -> bool:
        """True when every file's rows are accounted for: read = loaded + quarantined + duplicates + held."""
        return all(f.read == f.loaded + f.quarantined + f.duplicates + f.held for f in self.files)


class SourceError(ValueError):
    """A source mapping that does not fit its files (missing column, bad time zone); raised before any write."""


class NothingToPublishError(RuntimeError):
    """The lake holds no event at all after ingest: empty marts would pass for a green run."""


class FileNotReady(Exception):
    """A landing file still being written: it is left for a later run, nothing of it is loaded."""


class FileRefused(Exception):
    """A landing file ingest will not read (too wide, unreadable data pages): the rest of the batch goes on."""


MAX_COLUMNS = 500
"""Most columns a landing file may have: a wider one is refused before it is read. Exports have tens of
columns; a 49 MB CSV of 10,000 exhausts a 4 GB memory limit, and mapping 1,000 needs more than 512 MB and
~40 s whatever the rows (500 columns x 5,000 rows: 11 s within 512 MB)."""


@dataclass(frozen=True)
class LandingFile:
    """One landing file found for a source, with its content fingerprint."""

    source: SourceConfig
    path: Path
    rel: str
    size: int
    sha256: str
    ordinal: int
    compression: str = "none"
    known_lines: int | None = None
    known_mixed: bool | None = None
    copy_dir: Path | None = None
    """Where a copy with its line breaks made uniform is written when the file mixes them (see `content`)."""
    mtime_ns: int | None = None
    """Modification time seen before the file was hashed: the fingerprint holds while size and time are the same."""

    @cached_property
    def _scan(self) -> tuple[int, bool]:
        if self.known_lines is not None and self.known_mixed is not None:
            return self.known_lines, self.known_mixed
        # Decompressing is the expensive part of a fingerprint, so it waits until a file is ingested:
        # an unchanged compressed file is hashed each run but never inflated again.
        with open_landing(self.path, self.compression) as fh:
            return _count_lines(fh)

    @property
    def lines(self) -> int:
        """Physical lines of the (decompressed) content, a lone CR counting as a line break."""
        return self._scan[0]

    @property
    def mixed_line_breaks(self) -> bool:
        """The text mixes CRLF with LF, or has a CR on its own: DuckDB's reader cannot split such a file."""
        return self.source.format != "parquet" and self._scan[1]

    @cached_property
    def content(self) -> tuple[Path, str]:
        """The path and compression the readers read: the file itself, or a copy with every line break LF."""
        if not self.mixed_line_breaks:
            return self.path, self.compression
        # DuckDB takes the first line's break for the whole file and stops at any other (a spreadsheet's CRLF
        # rows after an LF header, a lone CR). A copy with CRLF and CR turned into LF reads as one file; a
        # quoted cell's CRLF becomes LF too. The fingerprint stays the landing file's own.
        if self.copy_dir is None:
            raise ValueError(f"landing file {self.rel} mixes line breaks and has no folder for its copy")
        out = self.copy_dir / f"{self.sha256}.txt"
        if not out.exists():
            self.copy_dir.mkdir(parents=True, exist_ok=True)
            part = out.with_name(f".{out.name}.part")
            with open_landing(self.path, self.compression) as src, part.open("wb") as dst:
                carry = b""
                while chunk := src.read(_HASH_CHUNK):
                    data = carry + chunk
                    # A CR at the end of a chunk may be the first half of a CRLF.
                    carry = data[-1:] if data.endswith(b"\r") else b""
                    dst.write(data[: len(data) - len(carry)].replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
                dst.write(carry.replace(b"\r", b"\n"))
            os.replace(part, out)
        return out, "none"

    @cached_property
    def empty(self) -> bool:
        """No content (for a compressed file: nothing once decompressed); a CSV of nothing but white space too."""
        if self.size == 0 or self.lines == 0:
            return True
        # A CSV of one line break has no header to map: it is an empty export, not a file missing every
        # column. (A JSON-lines file of blank lines is read: its blank rows are counted.)
        return self.source.format == "csv" and _only_white_space(self)


def _only_white_space(f: LandingFile) -> bool:
    """True when the (decompressed) content holds nothing but white space; stops at the first other byte."""
    with open_landing(*f.content) as fh:
        while chunk := fh.read(_HASH_CHUNK):
            if chunk.strip():
                return False
    return True


def events_glob(settings: Settings) -> str:
    """Absolute Parquet glob of the canonical events in the lake."""
    return str(settings.events_dir / "event_date=*" / "*.parquet")


def links_glob(settings: Settings) -> str:
    """Absolute Parquet glob of the identifier links of `kind: links` sources."""
    return str(settings.links_dir / "source=*" / "*.parquet")


def quarantine_glob(settings: Settings) -> str:
    """Absolute Parquet glob of the quarantined rows."""
    return str(settings.quarantine_dir / "source=*" / "*.parquet")


def manifest_path(settings: Settings) -> Path:
    """Where the ingest manifest (one row per ingested landing file version) lives."""
    return settings.state_dir / "ingest_manifest.parquet"


def held_dir(settings: Settings) -> Path:
    """Where rows later than their run's limit wait (canonical events, one file per landing file version)."""
    return settings.state_dir / "held"


def held_glob(settings: Settings) -> str:
    """Absolute Parquet glob of the held-back rows."""
    return str(held_dir(settings) / "source=*" / "*.parquet")


def held_path(settings: Settings, f: LandingFile) -> Path:
    """The held-back rows of one landing file version (named after source, path and content: unique per version)."""
    return _held_path(settings, f.source.name, f.rel, f.sha256)


def _held_path(settings: Settings, source: str, rel: str, sha: str) -> Path:
    key = hashlib.sha256(f"{source}\0{rel}\0{sha}".encode()).hexdigest()[:32]
    return held_dir(settings) / f"source={source}" / f"{key}.parquet"


def _quarantine_path(settings: Settings, source: str, sha: str) -> Path:
    # Named after the landing file's content, so a resumed run overwrites instead of duplicating.
    return settings.quarantine_dir / f"source={source}" / f"{sha[:32]}.parquet"


@dataclass(frozen=True)
class Replacement:
    """What the earlier versions of a landing file left outside the lake, which its new version replaces."""

    held_files: list[str]
    """Their held-back rows' files (named as table held_ids names them)."""
    quarantine_files: list[str]
    """Their quarantine files (records of other landing files in them are kept: see _count_replaced)."""


def _replacement(settings: Settings, f: LandingFile, shas: set[str]) -> Replacement:
    earlier = sorted(shas - {f.sha256})
    held = [_held_path(settings, f.source.name, f.rel, sha) for sha in earlier]
    quarantined = [_quarantine_path(settings, f.source.name, sha) for sha in earlier]
    return Replacement(
        held_files=[str(p) for p in held if p.exists()], quarantine_files=[str(p) for p in quarantined if p.exists()]
    )


# Compression is recognised by the first bytes, not the name: an export called `.csv` that is really
# gzip is read all the same, and DuckDB is told the codec instead of guessing it from the suffix.
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"))


def open_landing(path: Path, compression: str = "none") -> BinaryIO:
    """A landing file's content as a binary stream, decompressed when the file is gzip or zstd."""
    if compression == "none":
        return path.open("rb")
    return io.BufferedReader(pa.CompressedInputStream(pa.OSFile(str(path)), compression))


def _count_lines(fh: BinaryIO, digest: Any = None) -> tuple[int, bool]:
    """Physical lines in a stream (a last line without a break counts) and whether it mixes line breaks.

    LF, CRLF and a lone CR each end a line; the bytes are optionally hashed on the way.
    """
    lf = cr = crlf = 0
    last = b""
    while chunk := fh.read(_HASH_CHUNK):
        if digest is not None:
            digest.update(chunk)
        lf += chunk.count(b"\n")
        if b"\r" in chunk:
            cr += chunk.count(b"\r")
            crlf += chunk.count(b"\r\n")
        if last == b"\r" and chunk[:1] == b"\n":
            crlf += 1
        last = chunk[-1:]
    lone_cr = cr - crlf
    lines = lf + lone_cr
    mixed = lone_cr > 0 or 0 < crlf < lf
    return (lines + 1 if last and last not in (b"\n", b"\r") else lines), mixed


def file_fingerprint(path: Path) -> tuple[str, int | None, str, bool | None]:
    """sha256 of a file's bytes, its line count and mixed line breaks (None when compressed), its compression."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        head = fh.read(4)
        compression = next((name for magic, name in _MAGIC if head.startswith(magic)), "none")
        fh.seek(0)
        lines, mixed = _count_lines(fh, digest)
    plain = compression == "none"
    return digest.hexdigest(), (lines if plain else None), compression, (mixed if plain else None)


def _ends_mid_line(f: LandingFile) -> bool:
    """A text file whose last byte is not a line break may be cut inside its last row."""
    if f.source.format == "parquet" or f.compression != "none" or f.size == 0:
        return False
    with f.path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) not in (b"\n", b"\r")


def _pending_path(settings: Settings) -> Path:
    return settings.state_dir / "landing_pending.json"


Fingerprints = Mapping[tuple[str, str], tuple[int, int, str, int | None, str, bool | None]]
"""(source, file) -> (size, mtime_ns, sha256, lines, compression, mixed line breaks) as a run saw them."""


def landing_files(settings: Settings, known: Fingerprints | None = None) -> list[LandingFile]:
    """Every landing file of every source, sources in config order and files sorted by path.

    A file whose size and modification time are those of its `known` fingerprint is not hashed again.
    """
    found: list[LandingFile] = []
    for source in settings.sources:
        for path in sorted(p for p in settings.landing_dir.glob(source.path) if p.is_file()):
            rel = path.relative_to(settings.landing_dir).as_posix()
            # Taken before the hash: a write while it is read changes the time, and a later look hashes again.
            st = path.stat()
            seen = (known or {}).get((source.name, rel))
            if seen is not None and seen[:2] == (st.st_size, st.st_mtime_ns):
                sha, lines, compression, mixed = seen[2:]
            else:
                sha, lines, compression, mixed = file_fingerprint(path)
            found.append(
                LandingFile(
                    source=source,
                    path=path.resolve(),
                    rel=rel,
                    size=st.st_size,
                    sha256=sha,
                    ordinal=len(found),
                    compression=compression,
                    known_lines=lines,
                    known_mixed=mixed,
                    copy_dir=settings.tmp_dir / "landing-copies",  # see drop_landing_copies
                    mtime_ns=st.st_mtime_ns,
                )
            )
    return found


def write_fingerprints(settings: Settings, batch_id: str, files: list[LandingFile]) -> None:
    """Hand the run's landing fingerprints (and line counts it learnt reading) to its quality step."""
    # The quality step hashed every landing file of the history again (0.37 s at 1M events, growing each
    # night) only to learn which of them are still the versions the manifest records.
    scans = [f.__dict__.get("_scan", (f.known_lines, f.known_mixed)) for f in files]
    table = pa.table(
        {
            "source": [f.source.name for f in files],
            "file": [f.rel for f in files],
            "size": pa.array([f.size for f in files], pa.int64()),
            "mtime_ns": pa.array([f.mtime_ns for f in files], pa.int64()),
            "sha256": [f.sha256 for f in files],
            "lines": pa.array([s[0] for s in scans], pa.int64()),
            "compression": [f.compression for f in files],
            "mixed": pa.array([s[1] for s in scans], pa.bool_()),
        }
    )
    out = settings.handoff_dir / batch_id / "landing.parquet"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f".{out.name}.part")
        pq.write_table(table, part)
        os.replace(part, out)
    except OSError as exc:
        log.warning("landing fingerprints of batch %s not handed over (quality hashes again): %s", batch_id, exc)


# --- reading -----------------------------------------------------------------------------------------

# The sniffer is off: it gives up on the very files that most need reading (ragged rows), and the
# source config already says how the file is written. Quotes are escaped by doubling (RFC 4180).
_CSV_OPTIONS = (
    "auto_detect = false, header = true, columns = $columns, delim = $delim, quote = $quote, "
    "escape = $quote, encoding = $encoding, compression = $compression"
)


# Names a file column cannot be read under as it is: DuckDB's row id, the Parquet reader's row number.
# (Ingest's own working columns all start with `__`.)
_RESERVED_NAMES = frozenset({"rowid", "file_row_number"})
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def read_names(names: list[str], mapped: list[str]) -> list[str]:
    """The names a file's columns are read under: printable, unique whatever their case, none of ingest's own."""
    # DuckDB names are case-insensitive (`page` and `PAGE` clash) and ingest's working columns (`__line`,
    # `__reader_error`) share the table with the file's. A mapped name spelt exactly keeps it, wherever it
    # stands; any other clashing name gets `_<position>`, a leading `__` is dropped, control characters
    # (a NUL) are removed and an empty name becomes `column<position>`.
    keep = {n: i for i, n in reversed(list(enumerate(names))) if n in set(mapped) and not _reserved(n)}
    taken = {n.lower() for n in keep}
    out: list[str] = []
    for i, raw in enumerate(names):
        if keep.get(raw) == i:
            out.append(raw)
            continue
        name = _CONTROL_CHARS.sub("", raw).strip()
        name = name.lstrip("_") if name.startswith("__") else name
        name = name or f"column{i}"
        while name.lower() in taken or _reserved(name):
            name = f"{name}_{i}"
        taken.add(name.lower())
        out.append(name)
    return out


def _reserved(name: str) -> bool:
    return name.startswith("__") or name.lower() in _RESERVED_NAMES


def csv_header(f: LandingFile) -> list[str]:
    """Column names from a CSV file's header line, as read_names makes them readable."""
    # Only the header line is decoded here: a badly encoded byte in a data row is that row's problem
    # (the reader quarantines it), not a reason to reject the whole file.
    with open_landing(*f.content) as fh:
        line = fh.readline().decode(f.source.encoding)
    first = next(csv.reader([line], delimiter=f.source.delimiter, quotechar=f.source.quote), [])
    names = [raw.lstrip("\ufeff").strip() if i == 0 else raw.strip() for i, raw in enumerate(first)]
    return read_names(names, f.source.mapped_columns())


def _csv_params(f: LandingFile, columns: list[str]) -> dict[str, Any]:
    path, compression = f.content
    return {
        "path": str(path),
        "delim": f.source.delimiter,
        "quote": f.source.quote,
        "encoding": f.source.encoding,
        "compression": compression,
        "columns": dict.fromkeys(columns, "VARCHAR"),
    }


def _lines_params(f: LandingFile) -> dict[str, Any]:
    path, compression = f.content
    return {"path": str(path), "nul": "\x00", "compression": compression}


def _jsonl_lines_sql(options: str = "") -> str:
    # Each physical line as one text value (NUL never occurs in JSON text), blank lines kept as rows
    # so that row order gives the line number. No sniffing: it takes leading empty lines for a preamble
    # and skips them, shifting every line number after.
    return (
        "select * from read_csv($path, auto_detect = false, columns = {'__j_text': 'VARCHAR'}, header = false, "
        "delim = $nul, "
        f"quote = '', escape = '', encoding = 'utf-8', compression = $compression{options})"
    )


def file_columns(con: duckdb.DuckDBPyConnection, f: LandingFile) -> list[str]:
    """Column names of a landing file (for JSON lines: the keys of its objects, by first appearance)."""
    fmt = f.source.format
    if fmt == "csv":
        return csv_header(f)
    if fmt == "parquet":
        return [r[0] for r in db.fetch(con, "describe select * from read_parquet($path)", {"path": str(f.path)})]
    # A line the reader cannot take (bad UTF-8, over the line size limit) is that row's problem: the real
    # read quarantines it, so the key scan leaves it out instead of failing the file.
    sql = f"""
        with lines as (
            select row_number() over () as n, __j_text as t from ({_jsonl_lines_sql(", ignore_errors = true")})
        ),
        objects as (select n, t::json as j from lines where json_valid(t) and json_type(t) = 'OBJECT'),
        keys as (select n, unnest(json_keys(j)) as k from objects)
        select k from keys group by k order by min(n), k
    """
    return [r[0] for r in db.fetch(con, sql, _lines_params(f))]


def check_sources(
    con: duckdb.DuckDBPyConnection, files: list[LandingFile], refused: dict[int, str] | None = None
) -> dict[int, list[str]]:
    """Columns of every file to ingest; a file its source's mapping does not fit is refused or a SourceError.

    A file that cannot be read as its format, cannot be decompressed, is wider than MAX_COLUMNS or lacks a
    mapped column is named in `refused` (by ordinal, with why) when it is given, else raises a SourceError.
    """
    columns: dict[int, list[str]] = {}
    checked_zones: set[str] = set()
    for f in files:
        src = f.source

        def refuse(why: str, f: LandingFile = f) -> None:
            if refused is None:
                raise SourceError(f"source {f.source.name!r}, file {str(f.path)!r}: {why}")
            refused[f.ordinal] = why

        if src.timezone not in checked_zones:
            try:
                db.fetch(con, "select timezone($tz, timestamp '2000-01-01')", {"tz": src.timezone})
            except duckdb.Error as exc:
                raise SourceError(f"source {src.name!r}: unknown time zone {src.timezone!r}") from exc
            checked_zones.add(src.timezone)
        try:
            f.lines  # noqa: B018 - inflates a compressed file now: a broken stream is refused before any write
        except OSError as exc:
            if exc.errno is not None:
                raise  # the disk or share failed, not the file: the flow's ingest task retries I/O errors
            refuse(f"cannot be decompressed ({f.compression}): {exc}")
            continue
        if f.empty:
            # An empty file has no rows and no header: every column is null.
            columns[f.ordinal] = src.mapped_columns()
            continue
        try:
            cols = file_columns(con, f)
        except (duckdb.Error, UnicodeError, csv.Error) as exc:
            # The reader's own message (and its chained traceback) may quote a row: redacted, never chained.
            refuse(f"cannot be read as {src.format}: {pii.redacted(str(exc))}")
            continue
        if len(cols) > MAX_COLUMNS:
            refuse(
                f"it has {len(cols)} columns, more than the {MAX_COLUMNS} ingest reads (journeys.ingest.MAX_COLUMNS)"
            )
            continue
        required = src.mapped_columns()
        if src.format == "jsonl":
            # JSON objects simply omit keys they have no value for: only the keys every event needs
            # are required; optional ones (identifiers, revenue, ...) are read as null when absent.
            needed = [*src.event_id_columns, *src.required_time_columns]
            needed += [f.column for f in (src.channel, src.event_type) if f is not None and f.column is not None]
            required = [c for c in required if c in needed] if cols else []
        missing = [c for c in required if c not in cols]
        if missing:
            # A headerless file's first row is taken for its header: its names may be an e-mail or a phone.
            refuse(f"column {missing[0]!r} not found; columns are {pii.redacted_names(cols)}{_misfit_hint(src, cols)}")
            continue
        if src.format == "jsonl":
            cols = cols + [c for c in src.mapped_columns() if c not in cols]
        columns[f.ordinal] = cols
    return columns


def _misfit_hint(src: SourceConfig, cols: list[str]) -> str:
    """Why a CSV header may lack every mapped column: another delimiter, or not CSV at all (JSON lines)."""
    if src.format != "csv" or not cols:
        return ""
    if cols[0].lstrip().startswith(("{", "[")):
        return " (the file looks like JSON, not csv)"
    for delim in (";", "\t", "|", ",") if len(cols) == 1 else ():
        if delim != src.delimiter and delim in cols[0]:
            return f" (one column: is the delimiter {delim!r}, not {src.delimiter!r}?)"
    return ""


def _json_path(key: str) -> str:
    """JSON pointer (RFC 6901) of one top-level key: any key text is taken literally, the empty key too."""
    # A `$."..."` path cannot name the empty key; a pointer escapes only `~` and `/`.
    return "/" + key.replace("~", "~0").replace("/", "~1")


def _distinct_values_sql(f: LandingFile, columns: list[str], col: str) -> tuple[str, dict[str, Any]]:
    """SQL for the distinct text values of one column of a landing file (rows the reader rejects left out)."""
    q = db.quote_ident(col)
    if f.source.format == "csv":
        return f"select distinct {q} as v from read_csv($path, {_CSV_OPTIONS}, ignore_errors = true)", _csv_params(
            f, columns
        )
    if f.source.format == "jsonl":
        lines = _jsonl_lines_sql(", ignore_errors = true")
        sql = (
            f"select distinct json_extract_string(__j_text, $key) as v from ({lines})"
            " where json_valid(__j_text) and json_type(__j_text) = 'OBJECT'"
        )
        return sql, {**_lines_params(f), "key": _json_path(col)}
    return f"select distinct cast({q} as varchar) as v from read_parquet($path)", {"path": str(f.path)}


def check_channels(
    con: duckdb.DuckDBPyConnection, settings: Settings, files: list[LandingFile], columns: dict[int, list[str]]
) -> None:
    """Raise SourceError when a channel column holds a value that maps to a channel outside `channels`."""
    # The config check covers constants and map values; what a column holds is only known from its files.
    index = {src.name: i for i, src in enumerate(settings.sources)}
    for f in files:
        src = f.source
        col = src.channel.column if src.channel is not None else None
        if src.channel is None or col is None or f.empty or col not in columns[f.ordinal]:
            continue
        sql, params = _distinct_values_sql(f, columns[f.ordinal], col)
        params.update(keys=list(src.channel.map), values=list(src.channel.map.values()), known=list(settings.channels))
        # Same mapping as stg_events.sql: the map by trimmed or snake-cased raw value, else the snake-cased value.
        unknown = db.fetch(
            con,
            f"""
            with raw as ({sql}),
            map as (select cast($keys as varchar[]) as ks, cast($values as varchar[]) as vs),
            mapped as (
                select coalesce(
                    list_extract(vs, list_position(ks, trim(v))),
                    list_extract(vs, list_position(ks, journeys_snake(v))),
                    nullif(journeys_snake(v), '')
                ) as channel
                from raw, map
            )
            select distinct channel from mapped
            where channel is not null and not list_contains(cast($known as varchar[]), channel)
            order by channel limit 11
            """,
            params,
        )
        if unknown:
            names = pii.redacted_names([r[0] for r in unknown[:10]]) + (["..."] if len(unknown) > 10 else [])
            raise SourceError(
                f"source {src.name!r}, file {str(f.path)!r}: column {col!r} gives channel(s) {names} that are not"
                f" in `channels`; add them to `channels` or map them in sources[{index[src.name]}].channel.map"
            )


def _line_numbers(
    con: duckdb.DuckDBPyConnection, f: LandingFile, first_line: int, blank_lines: bool, quote: str = ""
) -> None:
    """Table src_line_map(k, line, last_line): the k-th parsed row sits on physical lines `line` to `last_line`.

    Rows the reader rejected (and, for CSV, blank lines) are not in the parsed output, so the parsed rows
    take the remaining rows' lines in order. A row starts on a line before which the file holds an even
    number of `quote` characters (quotes are escaped by doubling): a quoted field with line breaks makes
    one row of several lines. The reader numbers such a row as one line, so src_rejects' lines are turned
    into physical ones here. Table src_blank(line, t): the blank lines that start a row.
    """
    db.execute(con, "create or replace temp table src_blank (line bigint, t varchar)")
    db.execute(con, "create or replace temp table src_starts (logical bigint, line bigint, last_line bigint)")
    if blank_lines:
        # Only blankness and quotes matter here, so the scan must not fail on what the real read quarantines:
        # a NUL (this scan's delimiter) just splits off an ignored column, and latin-1 takes invalid UTF-8.
        # DuckDB's latin-1 refuses the bytes 0x80-0x9f, which UTF-8 text is full of (`É` is c3 89, `"` curly
        # e2 80 9c); line breaks and quotes are ASCII, so reading such a file as UTF-8 finds the same lines.
        for encoding in ("latin-1", "utf-8"):
            try:
                db.execute(
                    con,
                    "create or replace temp table src_physical as select row_number() over () as line,"
                    " __j_text as t from read_csv($path, auto_detect = false, columns = {'__j_text': 'VARCHAR'},"
                    " header = false, delim = $nul, quote = '', escape = '', encoding = $encoding,"
                    " strict_mode = false, compression = $compression)",
                    {**_lines_params(f), "encoding": encoding},
                )
                break
            except duckdb.InvalidInputException:
                if encoding == "utf-8":
                    raise
        db.execute(
            con,
            """
            insert into src_starts
            with quotes as (
                select line, t,
                    coalesce(sum(length(coalesce(t, '')) - length(replace(coalesce(t, ''), $quote, '')))
                        over (order by line rows between unbounded preceding and 1 preceding), 0) as before
                from src_physical
            ),
            starts as (select line, t from quotes where before % 2 = 0)
            select
                row_number() over (order by line) as logical,
                line,
                coalesce(lead(line) over (order by line) - 1, $last_line) as last_line
            from starts
            """,
            {"quote": quote, "last_line": f.lines},
        )
        # An unterminated quote leaves no row start after it: then each line stands for a row, as the reader
        # (which rejects that row) gives no better clue.
        n_starts = db.fetch(con, "select count(*) from src_starts")[0][0]
        n_rows = db.fetch(con, "select (select count(*) from src_parsed) + (select count(*) from src_rejects)")[0][0]
        if n_starts < n_rows + first_line - 1:
            db.execute(con, "delete from src_starts")
            db.execute(con, "insert into src_starts select line, line, line from src_physical")
        else:
            db.execute(
                con,
                "update src_rejects as r set line = s.line from src_starts as s where s.logical = r.line",
            )
        db.execute(
            con,
            "insert into src_blank select p.line, p.t from src_physical as p"
            " semi join src_starts as s on s.line = p.line",
        )
        db.execute(con, "drop table src_physical")
        blank = f"union all select line from src_blank where {_BLANK_TEXT.format('t')}"
        rows = "select line, last_line from src_starts"
    else:
        blank = ""
        rows = "select range as line, range as last_line from range(1, $last_line + 1)"
    db.execute(
        con,
        f"""
        create or replace temp table src_line_map as
        with skipped as (select line from src_rejects {blank}),
        candidates as (
            select line, last_line from ({rows})
            where line >= $first_line and line not in (select line from skipped)
        )
        select row_number() over (order by line) as k, line, last_line from candidates
        """,
        {"first_line": first_line, "last_line": max(f.lines, first_line)},
    )


def _load_rejects(con: duckdb.DuckDBPyConnection) -> None:
    """Table src_rejects: one row per physical line the reader could not parse."""
    db.execute(
        con,
        """
        create or replace temp table src_rejects as
        select
            cast(line as bigint) as line,
            journeys_redact(first(column_name order by column_idx)) as column_name,
            -- One message per line: a short row reports a "missing column" error for every absent column.
            -- The reader's message may quote the line; a header that is really a data row names columns.
            'row: ' || replace(lower(first(error_type order by column_idx)), '_', ' ') || ': '
                || journeys_redact(first(error_message order by column_idx)) as error,
            first(csv_line) as csv_line
        from journeys_reject_errors
        group by line
        """,
    )


def _drop_rejects(con: duckdb.DuckDBPyConnection) -> None:
    db.execute(con, "drop table if exists journeys_reject_errors")
    db.execute(con, "drop table if exists journeys_reject_scans")


_REJECTS = ", store_rejects = true, rejects_table = 'journeys_reject_errors', rejects_scan = 'journeys_reject_scans'"

# A blank row holds nothing but white space (and, in CSV, delimiters and quotes): spreadsheet exports
# pad files with thousands of `,,,,` rows. They are counted, never quarantined.
_BLANK_TEXT = "regexp_full_match(coalesce({}, ''), '\\s*')"


def read_source_rows(con: duckdb.DuckDBPyConnection, f: LandingFile, columns: list[str]) -> None:
    """Table src_rows: the file's rows as read and kept by its filters (file columns + __line, __reader_*).

    Raises FileRefused when the reader fails on the file as a whole (a corrupt Parquet page; not one bad row).
    """
    try:
        _read_rows(con, f, columns)
    except (duckdb.InvalidInputException, duckdb.IOException) as exc:
        # Row-level problems are quarantined by the reader; what reaches here spoils the whole file. Its
        # message may quote a row, hence redacted and not chained.
        raise FileRefused(f"cannot be read as {f.source.format}: {pii.redacted(str(exc))}") from None
    keep_rows(con, f.source)


def keep_rows(con: duckdb.DuckDBPyConnection, src: SourceConfig) -> int:
    """Move the rows of src_rows that fail the source's `keep_rows` filters to src_filtered_rows; return count."""
    db.execute(con, "create or replace temp table src_filtered_rows (line bigint)")
    if not src.keep_rows:
        return 0
    types = _column_types(con)
    params: dict[str, Any] = {}
    tests = []
    for i, rf in enumerate(src.keep_rows):
        value = f"nullif(trim({_text_expr(rf.column, types[rf.column])}), '')"
        if rf.one_of is not None:
            params[f"kr{i}"] = [v.strip() for v in rf.one_of]
            tests.append(f"coalesce(list_contains(cast($kr{i} as varchar[]), {value}), false)")
        else:
            tests.append(f"{value} is not null")
    # A row the reader could not split has no column to test: it stays, and is quarantined as unreadable.
    db.execute(
        con,
        f"insert into src_filtered_rows select __line from src_rows where __reader_error is null"
        f" and not ({' and '.join(tests)})",
        params,
    )
    db.execute(con, "delete from src_rows where __line in (select line from src_filtered_rows)")
    return db.fetch(con, "select count(*) from src_filtered_rows")[0][0]


def _read_rows(con: duckdb.DuckDBPyConnection, f: LandingFile, columns: list[str]) -> None:
    fmt = f.source.format
    db.execute(con, "create or replace temp table src_blank_rows (line bigint)")
    if f.empty:
        cols = "".join(f", null::varchar as {db.quote_ident(c)}" for c in columns)
        db.execute(
            con,
            "create or replace temp table src_rows as select null::bigint as __line, null::varchar as "
            f"__reader_error, null::varchar as __reader_column, null::varchar as __reader_raw{cols} where false",
        )
        return
    if fmt == "parquet":
        names = read_names(columns, f.source.mapped_columns())
        cols = "".join(f", {db.quote_ident(c)} as {db.quote_ident(n)}" for c, n in zip(columns, names, strict=True))
        db.execute(
            con,
            "create or replace temp table src_rows as select file_row_number + 1 as __line, "
            "null::varchar as __reader_error, null::varchar as __reader_column, null::varchar as __reader_raw"
            f"{cols} from read_parquet($path, file_row_number = true)",
            {"path": str(f.path)},
        )
        return
    _drop_rejects(con)
    if fmt == "csv":
        db.execute(
            con,
            f"create or replace temp table src_parsed as select * from read_csv($path, {_CSV_OPTIONS}{_REJECTS})",
            _csv_params(f, columns),
        )
        _load_rejects(con)
        n_parsed, n_rejected = db.fetch(
            con, "select (select count(*) from src_parsed), (select count(*) from src_rejects)"
        )[0]
        # Empty lines are skipped by the reader; only look for them when the counts say there are some.
        _line_numbers(con, f, 2, blank_lines=f.lines != n_parsed + n_rejected + 1, quote=f.source.quote)
        # Qualified: a file column may be called `line` or `k`, as src_line_map's are.
        parsed_blank = _BLANK_TEXT.format("concat(" + ", ".join(f"p.{db.quote_ident(c)}" for c in columns) + ")")
        # A row too short or too long for the header is rejected by the reader; padding rows often are.
        # A reject whose line text DuckDB did not keep is never taken for blank: it is quarantined.
        rejected_blank = (
            "(csv_line is not null and "
            + _BLANK_TEXT.format("replace(replace(csv_line, $delim, ''), $quote, '')")
            + ")"
        )
        marks = {"delim": f.source.delimiter, "quote": f.source.quote}
        db.execute(
            con,
            f"""
            insert into src_blank_rows
            select m.line
            from (select rowid + 1 as __j_k, * from src_parsed) as p
            left join src_line_map as m on m.k = p.__j_k
            where {parsed_blank}
            union all
            select line from src_rejects where {rejected_blank}
            union all
            select line from src_blank where {_BLANK_TEXT.format("t")} and line not in (select line from src_rejects)
            """,
            marks,
        )
        db.execute(
            con,
            f"""
            create or replace temp table src_rows as
            select m.line as __line, null::varchar as __reader_error, null::varchar as __reader_column,
                   null::varchar as __reader_raw, p.* exclude (__j_k)
            from (select rowid + 1 as __j_k, * from src_parsed) as p
            left join src_line_map as m on m.k = p.__j_k
            where not {parsed_blank}
            union all by name
            select line as __line, error as __reader_error, column_name as __reader_column,
                   journeys_mask(csv_line) as __reader_raw
            from src_rejects
            where not {rejected_blank}
            """,
            marks,
        )
        db.execute(con, "drop table src_parsed")
        return
    # JSON lines: one text value per line, then each key extracted as JSON.
    db.execute(
        con,
        f"create or replace temp table src_parsed as {_jsonl_lines_sql(_REJECTS)}",
        _lines_params(f),
    )
    _load_rejects(con)
    _line_numbers(con, f, 1, blank_lines=False)
    db.execute(
        con,
        "insert into src_blank_rows select m.line from (select rowid + 1 as __j_k, __j_text from src_parsed) as p "
        f"left join src_line_map as m on m.k = p.__j_k where {_BLANK_TEXT.format('p.__j_text')}",
    )
    # JSON keys are case-sensitive and may be empty: each key is read by its exact path, under a readable name.
    # All paths in one json_extract: the document is parsed once, not once per key (cdp's 8 keys: 176 -> 77 ms
    # for a 32k-line file).
    params: dict[str, Any] = {"keys": [_json_path(col) for col in columns]}
    names = read_names(columns, f.source.mapped_columns())
    extract_sql = "".join(f", __j_values[{i + 1}] as {db.quote_ident(name)}" for i, name in enumerate(names))
    db.execute(
        con,
        f"""
        create or replace temp table src_rows as
        with lines as (
            select m.line as __line, p.__j_text
            from (select rowid + 1 as __j_k, __j_text from src_parsed) as p
            left join src_line_map as m on m.k = p.__j_k
            where not {_BLANK_TEXT.format("p.__j_text")}
        ),
        docs as (
            select
                *,
                case when json_valid(__j_text) and json_type(__j_text) = 'OBJECT' then __j_text::json end
                    as __j_doc
            from lines
        ),
        extracted as (
            select *, json_extract(__j_doc, cast($keys as varchar[])) as __j_values from docs
        )
        select
            __line,
            case
                when __j_doc is not null then null
                when json_valid(__j_text) then 'row: broken JSON line: expected a JSON object, got another JSON value'
                else 'row: broken JSON line: expected a JSON object, got text that is not valid JSON'
            end as __reader_error,
            null::varchar as __reader_column,
            case when __j_doc is null then journeys_mask(__j_text) end as __reader_raw
            {extract_sql}
        from extracted
        union all by name
        select line as __line, error as __reader_error, null as __reader_column,
               journeys_mask(csv_line) as __reader_raw
        from src_rejects
        """,
        params,
    )
    db.execute(con, "drop table src_parsed")


# --- mapping -----------------------------------------------------------------------------------------


def _column_types(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return {r[0]: r[1] for r in db.fetch(con, "describe src_rows")}


def _text_expr(col: str, col_type: str) -> str:
    """SQL rendering a file column as text (JSON strings unquoted, timestamps in ISO form)."""
    q = db.quote_ident(col)
    if col_type == "JSON":
        return f"json_extract_string({q}, '$')"
    # Any precision (a Parquet `timestamp[ns, UTC]` is TIMESTAMPTZ_NS): strftime takes each as it is and
    # stops at microseconds, the lake's precision, so nanoseconds are cut, never rounded up a microsecond.
    if col_type.startswith("TIMESTAMPTZ") or col_type.endswith("WITH TIME ZONE"):
        return f"strftime(timezone('UTC', {q}), '%Y-%m-%d %H:%M:%S.%f') || '+00:00'"
    if col_type.startswith("TIMESTAMP"):
        return f"strftime({q}, '%Y-%m-%d %H:%M:%S.%f')"
    return f"cast({q} as varchar)"


def _json_expr(col: str, col_type: str) -> str:
    q = db.quote_ident(col)
    return q if col_type == "JSON" else f"to_json({q})"


def _mapped_value_expr(mf: Any, name: str, types: dict[str, str], params: dict[str, Any]) -> str:
    """SQL for a MappedField's raw text; its map goes in as two bound lists."""
    if mf is None:
        params[f"{name}_keys"], params[f"{name}_values"] = [], []
        return "null::varchar"
    params[f"{name}_keys"] = list(mf.map)
    params[f"{name}_values"] = list(mf.map.values())
    if mf.column is None:
        params[f"{name}_const"] = mf.value
        return f"cast(${name}_const as varchar)"
    return _text_expr(mf.column, types[mf.column])


_IDENTIFIER_REJECT = 'struct(field varchar, "column" varchar, reason varchar)'


def normalise_phones(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    src: SourceConfig,
    known: dict[str, phones.Phone] | None = None,
) -> int:
    """Table src_phones: each distinct raw phone of src_rows, its E.164 form or why it has none; returns count.

    `known` holds the run's numbers read so far (in the default region) and gets this file's new ones.
    """
    # Set-based: DuckDB collects the distinct values of all phone columns, libphonenumber reads each once
    # (about 100-130 us a number) and source_rows_sql joins the result back: a number on a million rows is
    # parsed once.
    db.execute(
        con,
        "create or replace temp table src_phones (__ph_raw varchar primary key, __ph_e164 varchar, __ph_error varchar)",
    )
    types = _column_types(con)
    cols = [c for c, t in src.identifiers.items() if t == "phone" and c in types]
    if not cols:
        return 0
    values = " union ".join(f"select {_text_expr(c, types[c])} as v from src_rows" for c in cols)
    ident = settings.identity
    patterns = "|".join(f"(?:{p})" for p in ident.blocked_patterns)
    # Placeholders such as 'n/a' or '0000' are no number at all: absent, as the identity graph treats
    # blocked values, not a reason to quarantine the row.
    rows = db.fetch(
        con,
        f"""
        select v, list_contains(cast($blocked as varchar[]), lower(trim(v)))
                  or ($has_patterns and regexp_matches(lower(trim(v)), $patterns))
        from (select distinct v from ({values})) where v is not null and trim(v) <> ''
        """,
        {
            "blocked": sorted({b.strip().lower() for b in ident.blocked_values}),
            "has_patterns": bool(patterns),
            "patterns": patterns or "^$",
        },
    )
    result = phones.normalise_all((v for v, blocked in rows if not blocked), settings.default_phone_region, known)
    table = pa.table(
        {
            "__ph_raw": [v for v, _ in rows],
            "__ph_e164": [None if b else result[v].e164 for v, b in rows],
            "__ph_error": [None if b else result[v].error for v, b in rows],
        },
        schema=pa.schema([("__ph_raw", pa.string()), ("__ph_e164", pa.string()), ("__ph_error", pa.string())]),
    )
    con.register("__phones_in", table)
    try:
        db.execute(con, "insert into src_phones select * from __phones_in")
    finally:
        con.unregister("__phones_in")
    return len(rows)


def _event_list_expr(src: SourceConfig, types: dict[str, str], params: dict[str, Any]) -> str:
    """SQL for the list of events one row carries: one struct per event (index, time text, type, ...)."""
    specs: list[tuple[str | None, bool, str | None]]
    if src.events is not None:
        specs = [(e.occurred_at, e.optional, e.canonical_type) for e in src.events]
    else:
        specs = [(src.occurred_at, False, None)]
    items = []
    for i, (col, optional, suffix) in enumerate(specs):
        params[f"evc{i}"], params[f"evo{i}"], params[f"evs{i}"] = col, optional, suffix
        col_type = types.get(col) if col is not None else None
        text = _text_expr(col, col_type) if col is not None and col_type is not None else "null"
        # A native Parquet timestamp needs no format; the format describes text.
        native = bool(col_type and col_type.startswith("TIMESTAMP"))
        if suffix is None:
            event_type = _mapped_value_expr(src.event_type, "event_type", types, params)
        else:
            event_type = f"cast($evs{i} as varchar)"
        items.append(
            f"{{'event_index': {i + 1}, 'occurred_text': cast({text} as varchar),"
            f" 'occurred_column': cast($evc{i} as varchar),"
            f" 'occurred_native': {'true' if native else 'false'},"
            f" 'event_type': cast({event_type} as varchar), 'optional': cast($evo{i} as boolean),"
            f" 'suffix': cast($evs{i} as varchar)}}"
        )
    if src.events is not None:
        # Constant types, no map: the keys stg_events.sql looks values up in stay empty.
        params["event_type_keys"], params["event_type_values"] = [], []
    return f"[{', '.join(items)}]"


def _attribute_entry(src: SourceConfig, col: str, col_type: str) -> tuple[str, bool]:
    """SQL for one attribute's JSON value, and whether it still needs redacting (`SourceConfig.redact_attributes`)."""
    # The object is built as text (_attributes_expr), which keeps a JSON value's white space as it is: json()
    # writes it compact, as the map that built it before did.
    value = f"json({_json_expr(col, col_type)})" if col_type == "JSON" else _json_expr(col, col_type)
    if not src.redact_attributes or col in src.identifiers:
        # An identifier's value is in the lake's identifiers as it is: hold_constant reads it here unchanged.
        return value, False
    if pii.pii_named(col):
        # Hashed as an e-mail identifier is (trim, lower case): an `Email` column's hash matches the lake's.
        return f"to_json('sha256:' || sha256($pii_salt || nullif(lower(trim({_text_expr(col, col_type)})), '')))", False
    # Scanned as JSON text, so nested values are too: an e-mail or phone anywhere is redacted.
    return value, True


_INLINE_REDACTIONS = 32
"""Most redacted attribute columns whose redaction is written out per column; wider files share one lambda."""


def _attributes_expr(entries: list[tuple[str, bool]]) -> str:
    """SQL for the attributes object: `"<$ak<i>>": <value>` per entry (value SQL, redact it?) whose value is not null.

    Built as text: `map_from_entries` + `to_json` cost three times as much (145 against 41 ms on a 54k-row web
    file). Up to _INLINE_REDACTIONS redacted columns the redaction macro is written out per column, which
    spares a lambda per row; for wider files it is applied once, in a lambda over all entries: inlined per
    column, the macro made a 500-column export's statement take half a minute to bind.
    """
    if sum(redact for _, redact in entries) <= _INLINE_REDACTIONS:
        # concat_ws leaves out a null pair: an attribute without a value is not in the object.
        pairs = ", ".join(
            f"to_json(cast($ak{i} as varchar)) || ':' || {f'journeys_redact_json({value})' if redact else value}"
            for i, (value, redact) in enumerate(entries)
        )
        return f"cast('{{' || concat_ws(',', {pairs}) || '}}' as json)"
    items = ", ".join(
        f"{{'k': cast($ak{i} as varchar), 'v': {value}, 'r': {str(redact).lower()}}}"
        for i, (value, redact) in enumerate(entries)
    )
    # Redacting keeps a value non-null, so filtering first drops the same entries.
    pairs = (
        f"list_transform(list_filter([{items}], lambda e: e.v is not null),"
        " lambda e: to_json(e.k) || ':' || case when e.r then journeys_redact_json(e.v) else e.v end)"
    )
    return f"cast('{{' || array_to_string({pairs}, ',') || '}}' as json)"


def _unique_keys(names: list[tuple[str, int]]) -> list[str]:
    """Attribute keys ((name, column position)) made unique as read_names does: a later equal one gets `_<position>`."""
    # Redacted names may meet (two columns named like e-mail addresses): an object must not repeat a key.
    taken: set[str] = set()
    out = []
    for name, position in names:
        while name in taken:
            name = f"{name}_{position}"
        taken.add(name)
        out.append(name)
    return out


def source_rows_sql(con: duckdb.DuckDBPyConnection, src: SourceConfig, params: dict[str, Any]) -> str:
    """SQL of stg_source_rows: src_rows mapped onto the fixed raw columns stg_events.sql (or stg_links.sql) reads.

    One row per event: a source that lists several `events` gives each physical row one row per event,
    numbered by `event_index` in config order. Adds the values it binds to `params`.
    """
    types = _column_types(con)
    file_cols = [c for c in types if not c.startswith("__")]
    opt = lambda col: "null::varchar" if col is None else _text_expr(col, types[col])  # noqa: E731

    id_items, joins, rejects = [], [], []
    phones_ready = bool(db.fetch(con, "select count(*) from duckdb_tables() where table_name = 'src_phones'")[0][0])
    for i, (col, id_type) in enumerate(src.identifiers.items()):
        params[f"idt{i}"] = id_type
        value = _text_expr(col, types[col])
        if id_type == "phone" and phones_ready:
            # Each phone column joins the distinct-value table; the raw number goes no further than this.
            joins.append(f"left join src_phones as ph{i} on ph{i}.__ph_raw = {value}")
            value = f"ph{i}.__ph_e164"
            params[f"idc{i}"] = col
            rejects.append(
                f"case when ph{i}.__ph_error is not null then {{'field': 'phone', 'column': cast($idc{i} as varchar),"
                f" 'reason': format('phone: expected a phone number in column ''{{}}'', got {{}}', $idc{i},"
                f" ph{i}.__ph_error)}} end"
            )
        # Normalised and hashed per column, so the staging models need no lambda over the list (83 -> 52 ms
        # for a 54k-row web file); with the type a constant, the macro's case is decided once per chunk.
        value = f"journeys_identifier(cast($idt{i} as varchar), {value}, $pii_salt)"
        id_items.append(f"{{'id_type': cast($idt{i} as varchar), 'id_value': {value}}}")
    identifiers = f"cast([{', '.join(id_items)}] as {ID_LIST_TYPE})"
    # The first failing identifier column (in config order) names the row's reason.
    identifier_reject = f"coalesce({', '.join(rejects)})" if rejects else "null"

    if src.kind == "links":
        return f"""
            select
                __line as source_line,
                __reader_error as reader_error,
                __reader_column as reader_column,
                {identifiers} as src_identifiers,
                cast({identifier_reject} as {_IDENTIFIER_REJECT}) as identifier_reject
            from src_rows
            {" ".join(joins)}
            """

    if src.event_id is None:
        # No id column: a deterministic hash of the source and the whole row (all columns, file order).
        row_pairs = ", ".join(f"$rk{i}, {_json_expr(c, types[c])}" for i, c in enumerate(file_cols))
        params.update({f"rk{i}": c for i, c in enumerate(file_cols)})
        row_hash = f"sha256($source || ':' || cast(json_object({row_pairs}) as varchar))" if file_cols else "null"
    else:
        row_hash = "null::varchar"
    parts = [f"nullif(trim({opt(c)}), '')" for c in src.event_id_columns]
    if len(parts) > 1:
        # A JSON list keeps the parts apart whatever they contain; one empty part leaves the id empty.
        any_empty = " or ".join(f"{x} is null" for x in parts)
        event_id = f"case when {any_empty} then null else to_json([{', '.join(parts)}])::varchar end"
    else:
        event_id = opt(src.event_id_columns[0] if parts else None)

    mapped = set(src.mapped_columns())
    # Identifier columns are attributes too (hold_constant: order_id needs the order id), except e-mails and
    # phones, even when listed: their raw values would leak there.
    default = [c for c in file_cols if c not in mapped or c in src.identifiers]
    keep = src.attributes if src.attributes is not None else default
    keep = [c for c in keep if c in types and src.identifiers.get(c) not in PII_TYPES]
    if keep:
        position = {c: i for i, c in enumerate(file_cols)}
        keys = _unique_keys(
            [(pii.redacted(c) if src.redact_attributes else c, position.get(c, i)) for i, c in enumerate(keep)]
        )
        params.update({f"ak{i}": key for i, key in enumerate(keys)})
        attributes = _attributes_expr([_attribute_entry(src, c, types[c]) for c in keep])
    else:
        attributes = "'{}'::json"

    return f"""
        with per_row as (
            select
                __line as source_line,
                __reader_error as reader_error,
                __reader_column as reader_column,
                {event_id} as src_event_id,
                {row_hash} as row_hash,
                {_event_list_expr(src, types, params)} as __events,
                {_mapped_value_expr(src.channel, "channel", types, params)} as src_channel,
                {_mapped_value_expr(src.touchpoint, "touchpoint", types, params)} as src_touchpoint,
                {opt(src.sentiment)} as src_sentiment,
                {opt(src.revenue)} as src_revenue,
                {identifiers} as src_identifiers,
                cast({identifier_reject} as {_IDENTIFIER_REJECT}) as identifier_reject,
                {attributes} as attributes
            from src_rows
            {" ".join(joins)}
        ),
        per_event as (
            select * exclude (__events), unnest(__events) as __event from per_row
        )
        select
            * exclude (__event, src_revenue, src_sentiment),
            -- A row's revenue and score belong to its first event: on every event they would count n times.
            case when struct_extract(__event, 'event_index') = 1 then src_revenue end as src_revenue,
            case when struct_extract(__event, 'event_index') = 1 then src_sentiment end as src_sentiment,
            struct_extract(__event, 'event_index') as event_index,
            struct_extract(__event, 'occurred_text') as src_occurred_at,
            struct_extract(__event, 'occurred_column') as occurred_column,
            struct_extract(__event, 'occurred_native') as occurred_native,
            struct_extract(__event, 'event_type') as src_event_type,
            struct_extract(__event, 'optional') as event_optional,
            struct_extract(__event, 'suffix') as event_suffix
        from per_event
    """


def safe_columns(src: SourceConfig) -> set[str]:
    """Mapped columns whose values are no personal data: event id, times, channel, event type, touchpoint, amounts."""
    cols = [*src.event_id_columns, src.occurred_at, src.revenue, src.sentiment]
    cols += [e.occurred_at for e in src.events or []]
    cols += [f.column for f in (src.channel, src.event_type, src.touchpoint) if f is not None]
    return {c for c in cols if c is not None and c not in src.identifiers}


def raw_row_expr(con: duckdb.DuckDBPyConnection, src: SourceConfig, params: dict[str, Any]) -> str:
    """SQL for a quarantined row's raw text: the row as JSON, only its known-safe columns readable.

    Known-safe mapped columns keep their value (with anything that looks like an e-mail or a phone
    redacted), identifier columns become salted hashes, and every other column keeps only its shape
    (`xxx@xxx.xx`, `+9 999`): an unmapped column may hold anything. Names are redacted too (a header
    may be a data row).
    """
    types = _column_types(con)
    safe = safe_columns(src)
    parts = []
    for i, col in enumerate(c for c in types if not c.startswith("__")):
        params[f"qk{i}"] = pii.redacted(col)
        text = _text_expr(col, types[col])
        if col in src.identifiers:
            value = f"'sha256:' || sha256($pii_salt || {text})"
        elif col in safe:
            value = f"journeys_redact_json({_json_expr(col, types[col])})"
        else:
            value = f"to_json(journeys_mask({text}))"
        parts.append(f"$qk{i}, {value}")
    return f"cast(json_object({', '.join(parts)}) as varchar)" if parts else "null::varchar"


# --- writing -----------------------------------------------------------------------------------------


def _fsync_replace(src: Path, dst: Path) -> None:
    """Atomically move a finished file into place (same file system)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def write_quarantine(
    con: duckdb.DuckDBPyConnection, settings: Settings, f: LandingFile, params: dict[str, Any], tmp: Path
) -> int:
    """Write the file's rejected rows (table stg_rejected) to quarantine, one Parquet file per file version."""
    n = db.fetch(con, "select count(*) from stg_rejected")[0][0]
    if n == 0:
        return 0
    raw = raw_row_expr(con, f.source, params)
    out = tmp / "quarantine.parquet"
    db.execute(
        con,
        f"""
        copy (
            with rejected as (select * from stg_rejected),
            raws as (
                select __line, {raw} as raw_json, __reader_raw
                from src_rows where __line in (select source_line from rejected)
            ),
            final as (
                select
                    cast($source as varchar) as source,
                    r.source_file,
                    r.source_line as line,
                    r.reject_field as field,
                    r.reject_column as "column",
                    r.reject_reason as reason,
                    coalesce(w.__reader_raw, w.raw_json) as raw,
                    r.batch_id,
                    cast($ingested_at as timestamp) as quarantined_at
                from rejected as r
                left join raws as w on w.__line = r.source_line
            )
            -- The source is only the folder's name (source=<name>): pyarrow and pandas reject a hive key
            -- that is also a column.
            select * exclude (source) from final order by line
        ) to $out (format parquet)
        """,
        {**params, "out": str(out)},
    )
    _fsync_replace(out, _quarantine_path(settings, f.source.name, f.sha256))
    return n


def _create_run_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Tables run_events and run_links: what the run loaded so far, waiting for the lake write (flush_run)."""
    cols = ", ".join(f"{db.quote_ident(c)} {t}" for c, t in EVENT_SCHEMA.items())
    db.execute(con, f"create or replace temp table run_events ({cols})")
    cols = ", ".join(f"{db.quote_ident(c)} {t}" for c, t in LINK_SCHEMA.items())
    db.execute(con, f"create or replace temp table run_links ({cols})")
    # The raw handoff's index: one row per file whose raw values wait in run_raw_<source number>.
    db.execute(
        con,
        "create or replace temp table run_raw_files (source varchar, file varchar, sha256 varchar, ordinal integer,"
        ' source_no integer, "rows" bigint, left_out bigint, columns varchar[])',
    )


_RUN_PART = ("run_part_{}", "run_keep_{}")
"""One landing file's staged events and the row ids of those it keeps (is_held marked), until the lake write."""


def gather(con: duckdb.DuckDBPyConnection, links: bool, staged: str, ordinal: int) -> None:
    """Keep one file's loaded rows (view stg_loaded) for the run's lake write: links appended to run_links,
    events left where they are (tables `staged` and stg_keep, renamed the run's part of that file)."""
    if links:
        cols = ", ".join(db.quote_ident(c) for c in LINK_COLUMNS)
        db.execute(con, f"insert into run_links select {cols} from stg_loaded")
        return
    # Renames, not a copy: appending every file's events to one table cost as much as staging them.
    part, keep = (name.format(ordinal) for name in _RUN_PART)
    db.execute(con, f"alter table {db.quote_ident(staged)} rename to {db.quote_ident(part)}")
    db.execute(con, f"alter table stg_keep rename to {db.quote_ident(keep)}")


def _run_parts(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    sql = "select table_name from duckdb_tables() where starts_with(table_name, 'run_keep_') order by table_name"
    ordinals = [int(r[0].removeprefix("run_keep_")) for r in db.fetch(con, sql)]
    return [(_RUN_PART[0].format(n), _RUN_PART[1].format(n)) for n in ordinals]


def gather_run_parts(con: duckdb.DuckDBPyConnection) -> None:
    """Move each file's part of the run (its loaded events) into run_events, one part at a time, dropping it."""
    # One union of every part under the lake write's sort ran out of memory at 10M events (840 parts, 4 GB),
    # where a single spillable table sorts within the limit: the parts are copied once, at the flush.
    cols = ", ".join("e." + db.quote_ident(c) for c in EVENT_COLUMNS)
    for part, keep in _run_parts(con):
        db.execute(
            con,
            f"insert into run_events select {cols} from {db.quote_ident(part)} as e"
            f" join {db.quote_ident(keep)} as k on k.row_id = e.rowid where not k.is_held",
        )
        db.execute(con, f"drop table {db.quote_ident(part)}")
        db.execute(con, f"drop table {db.quote_ident(keep)}")


def raw_suite_columns(src: SourceConfig) -> list[str]:
    """The raw columns a source's raw suite expects things of: its event id and required time columns."""
    return list(dict.fromkeys([*src.event_id_columns, *src.required_time_columns]))


def raw_text_expr(col: str, col_type: str) -> str:
    """SQL rendering a raw column of src_rows as the raw suite checks it: trimmed text, null when empty."""
    q = db.quote_ident(col)
    text = f"json_extract_string({q}, '$')" if col_type == "JSON" else f"cast({q} as varchar)"
    return f"nullif(trim({text}), '')"


def hand_raw_rows(con: duckdb.DuckDBPyConnection, settings: Settings, f: LandingFile, left_out: int) -> None:
    """Append src_rows' raw suite values (file ordinal, line, id and time texts) to the run's raw handoff."""
    # The quality step checked these values by reading every landing file again (38 s of its 48 s at 10M
    # events); ingest holds them here already, so they are kept for it, in the run's spillable tables.
    cols = raw_suite_columns(f.source)
    types = _column_types(con)
    if any(c not in types for c in cols):
        return  # read under another name: the quality step reads the landing file itself, as before
    source_no = [s.name for s in settings.sources].index(f.source.name)
    table = db.quote_ident(f"run_raw_{source_no}")
    defs = "".join(f", v{i} varchar" for i in range(1, len(cols) + 1))
    db.execute(con, f"create temp table if not exists {table} (__file integer, __line bigint{defs})")
    values = "".join(f", {raw_text_expr(c, types[c])}" for c in cols)
    sql = f"insert into {table} select $ordinal, __line{values} from src_rows order by __line"
    db.execute(con, sql, {"ordinal": f.ordinal})
    db.execute(
        con,
        "insert into run_raw_files select $source, $file, $sha, $ordinal, $source_no, (select count(*) from src_rows),"
        " $left_out, cast($columns as varchar[])",
        {
            "source": f.source.name,
            "file": f.rel,
            "sha": f.sha256,
            "ordinal": f.ordinal,
            "source_no": source_no,
            "left_out": left_out,
            "columns": cols,
        },
    )


def stage_raw_handoff(con: duckdb.DuckDBPyConnection, stem: str, tmp: Path) -> list[str]:
    """Write the run's raw handoff tables into `tmp` (a Parquet per source, then the index) and drop them.

    Returns the names written, the index last. Before the lake write: its sort of the run's events need not
    share memory with them. A failure never fails ingest: the quality step reads those files from landing.
    """
    numbers = [r[0] for r in db.fetch(con, "select distinct source_no from run_raw_files order by 1")]
    names: list[str] = []
    try:
        for n in numbers:
            name = f"{stem}-{n}.parquet"
            sql = f"copy {db.quote_ident(f'run_raw_{n}')} to $out (format parquet)"
            db.execute(con, sql, {"out": str(tmp / name)})
            names.append(name)
        if numbers:
            db.execute(
                con,
                "copy (select source, file, sha256, ordinal, $stem || '-' || source_no || '.parquet' as part,"
                ' "rows", left_out, columns from run_raw_files order by source, file, ordinal)'
                " to $out (format parquet)",
                {"stem": stem, "out": str(tmp / f"{stem}.files.parquet")},
            )
            names.append(f"{stem}.files.parquet")
    except (OSError, duckdb.Error) as exc:
        log.warning("raw handoff %s not written (the quality step reads landing instead): %s", stem, exc)
        names = []
    for n in numbers:
        db.execute(con, f"drop table if exists {db.quote_ident(f'run_raw_{n}')}")
    db.execute(con, "delete from run_raw_files")
    return names


def publish_raw_handoff(settings: Settings, batch_id: str, tmp: Path, names: list[str]) -> None:
    """Rename the staged raw handoff files into the batch's handoff folder, in order (the index last).

    After the manifest is written: a handed file is always a recorded one, and a kill in between only leaves
    files the quality step reads from landing; it takes a file from the handoff only once its index is in.
    """
    if not names:
        return
    try:
        out = settings.handoff_dir / batch_id
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            _fsync_replace(tmp / name, out / name)
    except OSError as exc:
        log.warning("raw handoff of batch %s not written (the quality step reads landing instead): %s", batch_id, exc)


def _free_stem(settings: Settings, batch_id: str, first: int) -> str:
    """`<batch>-<n>`, n the run's first file ordinal or the next number no earlier attempt of the batch wrote.

    Ordinals are positions in the landing listing: a file delivered between two attempts of a batch shifts
    them, and the retry's first file can take the first attempt's; its lake write would then replace that
    attempt's files (rows the manifest counts as loaded), and its handoff index that attempt's index.
    """
    n = first
    while True:
        stem = f"{batch_id}-{n}"
        taken = (
            any(settings.events_dir.glob(f"event_date=*/{stem}.parquet"))
            or any(settings.events_dir.glob(f"event_date=*/{stem}-*.parquet"))
            or any(settings.links_dir.glob(f"source=*/{stem}.parquet"))
            or any(settings.links_dir.glob(f"source=*/{stem}-*.parquet"))
            or any((settings.handoff_dir / batch_id).glob(f"{stem}.files.parquet"))
            or any((settings.handoff_dir / batch_id).glob(f"{stem}-*.parquet"))
        )
        if not taken:
            return stem
        n += 1


def flush_run(
    con: duckdb.DuckDBPyConnection, settings: Settings, *, batch_id: str, stem: str, max_at: datetime | None
) -> None:
    """Write the run's gathered events and links to the lake, then rewrite released held files, then the manifest.

    The order is what keeps a kill safe: rows are in the lake before held files lose them (the next run drops
    held rows whose ids it finds in the lake) and before the manifest marks their files done. The rows of the
    earlier versions of replaced files leave the lake first: a run killed after that re-reads the new versions
    (not yet in the manifest) and replaces again whatever of them is in the lake by then.
    """
    replaced = db.fetch(con, "select source, source_file from replaced_landing order by source, source_file")
    if replaced:
        files = db.fetch(
            con,
            "select distinct r.filename from replaced_rows as r semi join replaced_landing as l"
            " on l.source = r.source and l.source_file = r.source_file order by r.filename",
        )
        lake.drop_landing_rows(con, settings, [Path(r[0]) for r in files], [(s, f) for s, f in replaced])
    tmp = settings.lake_dir / "_tmp" / f"{stem}-flush"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        handed = stage_raw_handoff(con, stem, tmp)
        gather_run_parts(con)
        _write_event_table(con, settings, "run_events", stem, tmp)
        write_links(con, settings, stem, tmp)
        if max_at is not None:
            rewrite_held(con, settings, max_at, tmp)
        write_manifest(con, settings, tmp)
        publish_raw_handoff(settings, batch_id, tmp, handed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    drop_superseded(con, settings)
    db.execute(con, "delete from run_events")
    db.execute(con, "delete from run_links")
    db.execute(con, "delete from replaced_landing")


def _write_event_table(
    con: duckdb.DuckDBPyConnection, settings: Settings, table: str, stem: str, tmp: Path
) -> list[date]:
    """Write `table`'s events to the lake as `<stem>[-k].parquet` per event_date, renamed into place; return dates."""
    if db.fetch(con, f"select count(*) from {db.quote_ident(table)}")[0][0] == 0:
        return []
    cols = ", ".join(db.quote_ident(c) for c in EVENT_COLUMNS)
    out = tmp / "events"
    shutil.rmtree(out, ignore_errors=True)
    db.execute(
        con,
        f"copy (select {cols} from {db.quote_ident(table)} order by event_date, occurred_at, event_id) to $out "
        # The date is only the folder's name: pyarrow and pandas reject a hive key that is also a column.
        "(format parquet, partition_by (event_date), write_partition_columns false, overwrite true)",
        {"out": str(out)},
    )
    dates: list[date] = []
    for part in sorted(out.glob("event_date=*")):
        files = sorted(part.glob("*.parquet"))
        for k, written in enumerate(files):
            suffix = "" if len(files) == 1 else f"-{k}"
            _fsync_replace(written, settings.events_dir / part.name / f"{stem}{suffix}.parquet")
        dates.append(date.fromisoformat(part.name.split("=", 1)[1]))
    return dates


def write_held(con: duckdb.DuckDBPyConnection, settings: Settings, f: LandingFile, tmp: Path) -> int:
    """Write table stg_held (this file's events later than the run's limit) to state/held/; return count."""
    n = db.fetch(con, "select count(*) from stg_held")[0][0]
    path = held_path(settings, f)
    if n == 0:
        # A resumed run recomputes this file's held rows from scratch (its earlier ones are not counted as
        # known ids), so a file left by an attempt under another config must not outlive it.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return 0
    out = tmp / "held.parquet"
    cols = ", ".join(db.quote_ident(c) for c in EVENT_COLUMNS)
    db.execute(
        con,
        f"copy (select {cols} from stg_held order by occurred_at, event_id) to $out (format parquet)",
        {"out": str(out)},
    )
    _fsync_replace(out, path)
    return n


def release_held(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    batch_id: str,
    ingested_at: datetime,
    max_at: datetime,
    skip: list[str] | None = None,
) -> tuple[int, list[date]]:
    """Gather held-back rows no later than `max_at` into the run's events (this batch); return count and dates.

    Held files in `skip` (of landing file versions this run replaces) are left out: their rows never load.

    They reach the lake with the run's other events (flush_run), and only then are the held files rewritten
    without them (rewrite_held): a run killed in between left rows in both, and the next run, finding their
    ids in the lake, only drops them from state/held/ (never loads twice).
    """
    db.execute(con, f"create or replace temp table held_rows as {_HELD_ROWS_SQL}")
    if not any(held_dir(settings).glob("source=*/*.parquet")):
        return 0, []
    db.execute(
        con,
        "create or replace temp table held_rows as "
        "select * from read_parquet($glob, filename = true, hive_partitioning = false)"
        " where not list_contains($skip::varchar[], filename)",
        {"glob": held_glob(settings), "skip": skip or []},
    )
    db.execute(
        con,
        """
        create or replace temp table stg_released as
        select h.* exclude (filename) replace (
            cast($batch_id as varchar) as batch_id, cast($ingested_at as timestamp) as ingested_at
        )
        from held_rows as h
        anti join lake_ids as l on l.event_id = h.event_id
        where h.occurred_at <= $max_at
        """,
        {"batch_id": batch_id, "ingested_at": ingested_at, "max_at": max_at},
    )
    released = db.fetch(con, "select count(*) from stg_released")[0][0]
    dates = [r[0] for r in db.fetch(con, "select distinct event_date from stg_released order by 1")]
    cols = ", ".join(db.quote_ident(c) for c in EVENT_COLUMNS)
    db.execute(con, f"insert into run_events select {cols} from stg_released")
    db.execute(con, "insert into lake_ids select event_id from stg_released")
    db.execute(
        con,
        "delete from held_ids where event_id in (select event_id from held_rows where occurred_at <= $max_at)",
        {"max_at": max_at},
    )
    db.execute(con, "drop table stg_released")
    return released, dates


# An empty stand-in with the held files' columns, so rewrite_held has a table to read when nothing is held.
_HELD_ROWS_SQL = (
    "select *, null::varchar as filename from ("
    + "select "
    + ", ".join(f"null::{t} as {db.quote_ident(c)}" for c, t in EVENT_SCHEMA.items())
    + ") where false"
)


def rewrite_held(con: duckdb.DuckDBPyConnection, settings: Settings, max_at: datetime, tmp: Path) -> None:
    """Rewrite the held files that release_held took rows from, keeping only the rows still later than `max_at`."""
    touched = [
        r[0]
        for r in db.fetch(
            con,
            "select distinct filename from held_rows where occurred_at <= $max_at order by filename",
            {"max_at": max_at},
        )
    ]
    cols = ", ".join(db.quote_ident(c) for c in EVENT_COLUMNS)
    for k, name in enumerate(touched):
        path = Path(name)
        left = db.fetch(
            con,
            "select count(*) from held_rows where filename = $f and occurred_at > $max_at",
            {"f": name, "max_at": max_at},
        )[0][0]
        if left == 0:
            path.unlink()
            continue
        out = tmp / f"held-{k}.parquet"
        db.execute(
            con,
            f"copy (select {cols} from held_rows where filename = $f and occurred_at > $max_at"
            " order by occurred_at, event_id) to $out (format parquet)",
            {"f": name, "max_at": max_at, "out": str(out)},
        )
        _fsync_replace(out, path)
    db.execute(con, "delete from held_rows")


def count_held(settings: Settings) -> int:
    """Rows held back on this data root, waiting for a run whose as_of passes them."""
    if not any(held_dir(settings).glob("source=*/*.parquet")):
        return 0
    with duckdb.connect() as con:
        sql = "select count(*) from read_parquet($g, hive_partitioning = false)"
        return int(db.fetch(con, sql, {"g": held_glob(settings)})[0][0])


def write_links(con: duckdb.DuckDBPyConnection, settings: Settings, stem: str, tmp: Path) -> None:
    """Write table run_links to lake/links/source=<name>/<stem>.parquet, one file per source, renamed into place."""
    # The source is only the folder's name (source=<name>): pyarrow and pandas reject a hive key that is also a column.
    cols = ", ".join(db.quote_ident(c) for c in LINK_COLUMNS if c != "source")
    for (source,) in db.fetch(con, "select distinct source from run_links order by 1"):
        out = tmp / f"links-{source}.parquet"
        db.execute(
            con,
            f"copy (select {cols} from run_links where source = $source order by source_file, source_line)"
            " to $out (format parquet)",
            {"source": source, "out": str(out)},
        )
        _fsync_replace(out, settings.links_dir / f"source={source}" / f"{stem}.parquet")


def drop_superseded(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Delete the quarantine and held files of landing file versions that a later version replaced (per manifest).

    Run after the manifest records the new version and again before each ingest reads anything, so a kill in
    between leaves no superseded record behind. A quarantine file is named after content only: one whose
    content is also the current version of another file of the source is that file's, and stays.
    """
    rows = db.fetch(
        con,
        """
        with

        versions as (
            select im.source, im.file, im.sha256, im.ingested_at from ingest_manifest as im
        ),

        latest as (
            select vs.source, vs.file, arg_max(vs.sha256, vs.ingested_at) as sha256
            from versions as vs
            group by vs.source, vs.file
        ),

        final as (
            select
                vs.source,
                vs.file,
                vs.sha256,
                vs.sha256 in (select lt.sha256 from latest as lt where lt.source = vs.source) as content_current
            from versions as vs
            anti join latest as lt on lt.source = vs.source and lt.file = vs.file and lt.sha256 = vs.sha256
        )

        select * from final order by source, file, sha256
        """,
    )
    for source, file, sha, content_current in rows:
        _held_path(settings, source, file, sha).unlink(missing_ok=True)
        if not content_current:
            _quarantine_path(settings, source, sha).unlink(missing_ok=True)


def write_manifest(con: duckdb.DuckDBPyConnection, settings: Settings, tmp: Path) -> None:
    """Rewrite the manifest from table ingest_manifest, atomically."""
    out = tmp / "manifest.parquet"
    db.execute(
        con,
        "copy (select * from ingest_manifest order by ingested_at, source, file) to $out (format parquet)",
        {"out": str(out)},
    )
    _fsync_replace(out, manifest_path(settings))


# --- orchestration -----------------------------------------------------------------------------------


def _utc_naive(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def ingest_connection(settings: Settings) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection set up like ingest's (macros, UTC, ordered rows), for reading landing files."""
    return _connect(settings, spill=True)


def _connect(settings: Settings, *, spill: bool) -> duckdb.DuckDBPyConnection:
    con = db.connect(
        memory_limit=settings.memory_limit,
        threads=settings.threads,
        temp_directory=settings.tmp_dir if spill else None,
    )
    # Row order of a parsed file is how rows get their line numbers.
    db.execute(con, "set preserve_insertion_order = true")
    db.execute(con, "set TimeZone = 'UTC'")
    for stmt in (_MACROS + pii.SQL_MACROS).split(";\n"):
        if stmt.strip():
            db.execute(con, stmt)
    return con


def _load_manifest(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Table ingest_manifest: one row per landing file version ingested so far."""
    db.execute(
        con,
        """
        create or replace temp table ingest_manifest (
            source varchar, file varchar, size bigint, sha256 varchar, batch_id varchar,
            ingested_at timestamp, "read" bigint, loaded bigint, quarantined bigint, duplicates bigint,
            columns varchar[], new_columns varchar[], blank bigint, held bigint, filtered bigint, events bigint,
            events_skipped bigint, replaced bigint, superseded_by varchar
        )
        """,
    )
    if manifest_path(settings).exists():
        # By name: manifests written before the columns were recorded simply have them null.
        db.execute(
            con,
            "insert into ingest_manifest by name select * from read_parquet($p)",
            {"p": str(manifest_path(settings))},
        )


def _load_state(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Tables ingest_manifest (what was ingested), lake_ids (event ids in the lake) and held_ids (held back)."""
    _load_manifest(con, settings)
    # Link ids share the table: both start with their source's name, and source names are unique.
    db.execute(con, "create or replace temp table lake_ids (event_id varchar)")
    if any(settings.events_dir.glob("event_date=*/*.parquet")):
        db.execute(
            con,
            "insert into lake_ids select event_id from read_parquet($glob, hive_partitioning = false)",
            {"glob": events_glob(settings)},
        )
    _create_run_tables(con)
    # A held row's id is taken: a later row with it is a duplicate, as it would be had the row loaded.
    db.execute(con, "create or replace temp table held_ids (event_id varchar, held_file varchar)")
    if any(held_dir(settings).glob("source=*/*.parquet")):
        db.execute(
            con,
            "insert into held_ids select event_id, filename from read_parquet($glob, filename = true,"
            " hive_partitioning = false)",
            {"glob": held_glob(settings)},
        )
    if any(settings.links_dir.glob("source=*/*.parquet")):
        db.execute(
            con,
            "insert into lake_ids select link_id from read_parquet($glob, hive_partitioning = false)",
            {"glob": links_glob(settings)},
        )
    db.execute(con, "create or replace temp table replaced_landing (source varchar, source_file varchar)")
    db.execute(
        con,
        "create or replace temp table replaced_rows"
        " (source varchar, source_file varchar, event_id varchar, source_line bigint, filename varchar)",
    )


def _load_replaced_rows(con: duckdb.DuckDBPyConnection, settings: Settings, pairs: list[tuple[str, str]]) -> None:
    """Table replaced_rows: the lake's events and links of the landing files `pairs` ((source, path)) replace."""
    if not pairs:
        return
    db.execute(
        con,
        "create or replace temp table _replacing as select unnest($s::varchar[]) as source,"
        " unnest($f::varchar[]) as source_file",
        {"s": [s for s, _ in pairs], "f": [f for _, f in pairs]},
    )
    # Hive keys from the folders: a links file's source is only its folder's name.
    lake_globs = [
        (settings.events_dir, "event_date=*", events_glob(settings), "event_id"),
        (settings.links_dir, "source=*", links_glob(settings), "link_id"),
    ]
    for folder, parts, glob, id_col in lake_globs:
        if not any(folder.glob(f"{parts}/*.parquet")):
            continue
        db.execute(
            con,
            f"insert into replaced_rows select r.source, r.source_file, r.{id_col}, r.source_line, r.filename"
            " from read_parquet($glob, filename = true, hive_partitioning = true, union_by_name = true) as r"
            " semi join _replacing as p on p.source = r.source and p.source_file = r.source_file",
            {"glob": glob},
        )
    db.execute(con, "drop table _replacing")


def _model_params(
    settings: Settings,
    f: LandingFile,
    *,
    batch_id: str,
    ingested_at: datetime,
    max_at: datetime,
    min_at: datetime,
) -> dict[str, Any]:
    src = f.source
    return {
        "source": src.name,
        "source_file": f.rel,
        "batch_id": batch_id,
        "ingested_at": ingested_at,
        "timezone": src.timezone,
        # Applied to text times only: source_rows_sql marks each native Parquet timestamp column.
        "timestamp_format": src.timestamp_format,
        "event_id_column": ", ".join(src.event_id_columns) or None,
        "revenue_column": src.revenue,
        "sentiment_column": src.sentiment,
        "sentiment_scale": src.sentiment_scale,
        "pii_salt": settings.pii_salt.get_secret_value(),
        "phone_region": settings.default_phone_region,
        "min_occurred_at": min_at,
        "max_occurred_at": max_at,
    }


def ingest_file(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    f: LandingFile,
    columns: list[str],
    *,
    batch_id: str,
    ingested_at: datetime,
    min_at: datetime,
    max_at: datetime,
    new_columns: list[str] | None = None,
    replaces: Replacement | None = None,
    catalog: models.Catalog | None = None,
    phone_cache: dict[str, phones.Phone] | None = None,
) -> tuple[FileReport, list[date]]:
    """Ingest one landing file: stage, validate, de-duplicate, write quarantine, gather its events for flush_run.

    With `replaces`, the file is a new version: its rows are compared with the lake and the held-back rows
    without the earlier version's (table replaced_rows), which flush_run then drops from the lake. `catalog`
    and `phone_cache` are the run's, loaded and filled once for all its files.
    """
    read_source_rows(con, f, columns)
    # The rows must be the bytes that were fingerprinted: an exporter rewriting the file meanwhile would
    # otherwise leave a partial version recorded under the full file's hash, skipped by every later run.
    if file_fingerprint(f.path)[0] != f.sha256:
        raise FileNotReady("its content changed while it was read")
    params = _model_params(settings, f, batch_id=batch_id, ingested_at=ingested_at, min_at=min_at, max_at=max_at)
    links = f.source.kind == "links"
    mapped = set(f.source.mapped_columns())
    staged = "stg_links" if links else "stg_events"
    id_col = "link_id" if links else "event_id"
    normalise_phones(con, settings, f.source, phone_cache)
    catalog = catalog or models.load_catalog(settings.models_path)
    # The mapping is read by the staging model as its input, not stored first: one table of the file's
    # events instead of two (a 54k-row web file's mapped copy cost 30 ms of the 220 ms mapping it).
    mapping = source_rows_sql(con, f.source, params)
    models.materialize(con, catalog.models[staged], params, inputs={"stg_source_rows": mapping})
    # Accounting is per physical row: a row with one rejected event is quarantined whole (its first failing
    # event, in config order, gives the reason) and none of its events is loaded.
    db.execute(
        con,
        f"""
        create or replace temp table stg_rejected as
        select * from {db.quote_ident(staged)} where reject_reason is not null
        qualify row_number() over (partition by source_line order by event_index) = 1
        """,
    )
    # First occurrence of an id (by line, then event) wins, held back or not; ids already in the lake or held
    # back are duplicates too, except this file version's own held rows (a resumed run recomputes them) and
    # the rows of the earlier versions it replaces.
    own_held = str(held_path(settings, f))
    old_held = replaces.held_files if replaces else []
    held_expr = "false" if links else "e.held_back"
    version = {"source": f.source.name, "file": f.rel}
    db.execute(
        con,
        f"""
        create or replace temp table stg_keep as
        with candidates as (
            select e.rowid as row_id, e.{id_col} as id, e.source_line, e.event_index, {held_expr} as is_held
            from {db.quote_ident(staged)} as e
            anti join (
                -- Only this file's ids: a set operation over every id of the lake would cost each file the
                -- whole history.
                select li.event_id from lake_ids as li
                semi join {db.quote_ident(staged)} as s on s.{id_col} = li.event_id
                except
                select event_id from replaced_rows where source = $source and source_file = $file
            ) as l on l.event_id = e.{id_col}
            anti join (
                select event_id from held_ids
                where held_file <> $own and not list_contains($old_held::varchar[], held_file)
            ) as h on h.event_id = e.{id_col}
            anti join stg_rejected as r on r.source_line = e.source_line
            where not e.skipped
        ),
        final as (
            -- The window sorts ids and line numbers only: over whole events it was most of this statement.
            select row_id, is_held from candidates
            qualify row_number() over (partition by id order by source_line, event_index, row_id) = 1
        )
        select * from final
        """,
        {"own": own_held, "old_held": old_held, **version},
    )
    # Views, not copies: the staged events stay where they are (narrow counts read them a few times) and
    # wait for the lake write as they are (gather).
    db.execute(
        con,
        f"create or replace temp view stg_kept as select e.*, k.is_held from {db.quote_ident(staged)} as e"
        " join stg_keep as k on k.row_id = e.rowid",
    )
    db.execute(
        con, "create or replace temp view stg_loaded as select * exclude (is_held) from stg_kept where not is_held"
    )
    db.execute(con, "create or replace temp view stg_held as select * exclude (is_held) from stg_kept where is_held")
    read, quarantined, skipped = db.fetch(
        con,
        f"""
        select
            count(distinct source_line),
            (select count(*) from stg_rejected),
            count(*) filter (where skipped and source_line not in (select source_line from stg_rejected))
        from {db.quote_ident(staged)}
        """,
    )[0]
    loaded, events = db.fetch(con, "select count(distinct source_line), count(*) from stg_loaded")[0]
    blank = db.fetch(con, "select count(*) from src_blank_rows")[0][0]
    filtered = db.fetch(con, "select count(*) from src_filtered_rows")[0][0]
    # A row counts as held when none of its events loaded now (a wide row may load some and hold others).
    held = db.fetch(
        con,
        "select count(distinct source_line) from stg_held"
        " where source_line not in (select source_line from stg_loaded)",
    )[0][0]
    duplicates = read - quarantined - loaded - held
    replaced = _count_replaced(con, f, replaces) if replaces else 0

    dates: list[date] = []
    if not links:
        dates = [r[0] for r in db.fetch(con, "select distinct event_date from stg_loaded order by 1")]
    tmp = settings.lake_dir / "_tmp" / f"{batch_id}-{f.ordinal}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # Quarantine and held rows are named after the file version, so a rerun overwrites them; loaded rows
        # wait in the run's tables for the one lake write at the end of ingest (flush_run).
        write_quarantine(con, settings, f, params, tmp)
        if not links:  # links have no time, so nothing of them is ever held back
            write_held(con, settings, f, tmp)
        # All or nothing per file: a failure on a later file flushes only whole files.
        db.execute(con, "begin transaction")
        if replaces:
            db.execute(
                con,
                "delete from lake_ids where event_id in"
                " (select event_id from replaced_rows where source = $source and source_file = $file)",
                version,
            )
            db.execute(con, "delete from held_ids where list_contains($old::varchar[], held_file)", {"old": old_held})
            db.execute(
                con,
                "update ingest_manifest set superseded_by = $batch_id"
                " where source = $source and file = $file and superseded_by is null",
                {**version, "batch_id": batch_id},
            )
            db.execute(con, "insert into replaced_landing values ($source, $file)", version)
        db.execute(con, f"insert into lake_ids select {id_col} from stg_loaded")
        if not links:
            db.execute(con, "delete from held_ids where held_file = $own", {"own": own_held})
            db.execute(con, "insert into held_ids select event_id, $own from stg_held", {"own": own_held})
        db.execute(
            con,
            "insert into ingest_manifest values ($source, $file, $size, $sha, $batch_id, $ingested_at, "
            "$read, $loaded, $quarantined, $duplicates, cast($columns as varchar[]), cast($new_columns as varchar[]), "
            "$blank, $held, $filtered, $events, $events_skipped, $replaced, null)",
            {
                "source": f.source.name,
                "file": f.rel,
                "size": f.size,
                "sha": f.sha256,
                "batch_id": batch_id,
                "ingested_at": ingested_at,
                "read": read,
                "loaded": loaded,
                "quarantined": quarantined,
                "duplicates": duplicates,
                "columns": [c if c in mapped else pii.redacted(c) for c in columns],
                "new_columns": new_columns,
                "blank": blank,
                "held": held,
                "filtered": filtered,
                "events": 0 if links else events,
                "events_skipped": skipped,
                "replaced": replaced,
            },
        )
        hand_raw_rows(con, settings, f, blank + filtered)
        gather(con, links, staged, f.ordinal)
        db.execute(con, "commit")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            db.execute(con, "rollback")
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    drop_file_tables(con)
    report = FileReport(
        source=f.source.name,
        file=f.rel,
        read=read,
        loaded=loaded,
        quarantined=quarantined,
        duplicates=duplicates,
        skipped=False,
        new_columns=new_columns or [],
        blank=blank,
        held=held,
        filtered=filtered,
        events=0 if links else events,
        events_skipped=skipped,
        replaced=replaced,
    )
    return report, dates


def _count_replaced(con: duckdb.DuckDBPyConnection, f: LandingFile, replaces: Replacement) -> int:
    """Rows of a landing file's earlier versions that its new version takes out: in the lake, held, quarantined."""
    version = {"source": f.source.name, "file": f.rel}
    parts = ["select source_line from replaced_rows where source = $source and source_file = $file"]
    if replaces.held_files:
        parts.append(
            "select source_line from read_parquet($held::varchar[], hive_partitioning = false)"
            " where source_file = $file"
        )
    # A row is one row however many of its events loaded or were held (a wide row may do both).
    lines = "select count(distinct source_line) from (" + " union all ".join(parts) + ")"
    n = int(db.fetch(con, lines, {**version, "held": replaces.held_files})[0][0])
    if replaces.quarantine_files:
        quarantined = (
            "select count(*) from read_parquet($q::varchar[], hive_partitioning = false) where source_file = $file"
        )
        n += int(db.fetch(con, quarantined, {"file": f.rel, "q": replaces.quarantine_files})[0][0])
    return n


_FILE_TABLES = (
    "src_rows",
    "src_blank_rows",
    "src_filtered_rows",
    "src_phones",
    "stg_events",
    "stg_links",
    "stg_rejected",
    "stg_keep",
)
"""Working tables of one landing file, dropped once it is done (or left for a later run)."""

_FILE_VIEWS = ("stg_loaded", "stg_held", "stg_kept")
"""Working views of one landing file (over its staged events and stg_keep), dropped before its tables."""


def drop_file_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Drop one landing file's working tables and views (a done file's staged events are already the run's part)."""
    for view in _FILE_VIEWS:
        db.execute(con, f"drop view if exists {db.quote_ident(view)}")
    for table in _FILE_TABLES:
        db.execute(con, f"drop table if exists {db.quote_ident(table)}")


def schema_drift(
    files: list[LandingFile], columns: dict[int, list[str]], known: dict[str, set[str]]
) -> dict[int, list[str]]:
    """Unmapped columns of each file that no earlier file of its source had; each is logged as a warning.

    The first file ever ingested of a source sets its baseline (no warning); a file whose columns are
    unknown to the mapping and to every earlier file is schema drift: by default its values are kept in
    `attributes`, unless the source lists its attributes explicitly, in which case they are not kept.
    """
    seen = {name: set(cols) for name, cols in known.items()}
    drift: dict[int, list[str]] = {}
    for f in files:
        src, cols = f.source, columns.get(f.ordinal, [])
        if f.empty:
            continue  # no header: nothing to compare
        baseline = seen.setdefault(src.name, set())
        mapped = set(src.mapped_columns())
        # Names as the manifest keeps them (redacted): a header may be a data row holding an e-mail.
        names = [c if c in mapped else pii.redacted(c) for c in cols]
        new = [n for c, n in zip(cols, names, strict=True) if n not in baseline and c not in mapped]
        if baseline and new:
            kept = src.attributes is None or all(c in src.attributes for c in new)
            where = "kept in attributes" if kept else "not kept: the source lists its attributes explicitly"
            if src.kind == "links":
                where = "not kept: a links source keeps only its identifiers"
            log.warning(
                "schema drift: source %r, file %r: new column(s) %s not in the mapping; %s", src.name, f.rel, new, where
            )
            drift[f.ordinal] = new
        baseline.update(names)
    return drift


def ingest_sources(settings: Settings, *, as_of: datetime, batch_id: str) -> IngestReport:
    """Ingest every new or changed landing file of every configured source into the lake."""
    try:
        return _ingest_sources(settings, as_of=as_of, batch_id=batch_id)
    finally:
        # Scratch, and a landing file's raw content: gone whether the run ends well or not.
        drop_landing_copies(settings)


def check_batch_id(batch_id: str) -> None:
    """Refuse a batch id that is no plain name: it names lake files and the batch's raw handoff folder."""
    if not _BATCH_RE.match(batch_id):
        raise ValueError(f"batch_id must match {_BATCH_RE.pattern}, got {batch_id!r}")


def drop_landing_copies(settings: Settings) -> None:
    """Delete the LF copies of landing files with mixed line breaks (LandingFile.content) under the tmp folder."""
    shutil.rmtree(settings.tmp_dir / "landing-copies", ignore_errors=True)
    with contextlib.suppress(OSError):
        settings.tmp_dir.rmdir()  # only when empty


def _ingest_sources(settings: Settings, *, as_of: datetime, batch_id: str) -> IngestReport:
    settings.require_pii_salt()
    check_batch_id(batch_id)
    from journeys.reset import finish_reset  # reset builds on this module

    # A reset killed after its new lake was ready is completed before anything is read.
    finish_reset(settings)
    # So is a compaction killed mid-swap: until then a partition may hold rows twice.
    lake.finish_compaction(settings)
    files = landing_files(settings)
    if not files:
        log.warning("no landing file under %s matches any source's path glob", settings.landing_dir)
    # The newest version recorded of each (source, path) is what the lake holds: a file whose content differs
    # from it (even one equal to an older version) is a new version.
    latest: dict[tuple[str, str], str] = {}
    versions: dict[tuple[str, str], set[str]] = {}
    known: dict[str, set[str]] = {}
    if manifest_path(settings).exists():
        with _connect(settings, spill=False) as con:
            _load_manifest(con, settings)
            # A kill after a new version was recorded left its earlier version's quarantine and held files.
            drop_superseded(con, settings)
            sql = "select source, file, sha256, columns from ingest_manifest order by ingested_at, source, file"
            for source, file, sha, cols in db.fetch(con, sql):
                latest[(source, file)] = sha
                versions.setdefault((source, file), set()).add(sha)
                known.setdefault(source, set()).update(cols or [])
    todo = [f for f in files if latest.get((f.source.name, f.rel)) != f.sha256]

    # Every file is checked before anything is written: a wrong mapping must not leave half a batch.
    refused: dict[int, str] = {}
    with _connect(settings, spill=False) as con:
        columns = check_sources(con, todo, refused)
        check_channels(con, settings, [f for f in todo if f.ordinal not in refused], columns)
    drift = schema_drift([f for f in todo if f.ordinal not in refused], columns, known)

    as_of_utc = _utc_naive(as_of)
    max_at = as_of_utc + timedelta(microseconds=parse_duration_us(settings.quality.max_future) or 0)
    min_at = datetime.fromisoformat(settings.quality.min_occurred_at)
    min_at = _utc_naive(min_at)
    ingested_at = datetime.now(UTC).replace(tzinfo=None)

    # Leftovers of a run that died mid-write are never visible to readers (only finished files are
    # renamed into the lake); clear them. Runs on one data root are serialised by the flow's run lock.
    shutil.rmtree(settings.lake_dir / "_tmp", ignore_errors=True)

    report = IngestReport(batch_id=batch_id)
    affected: set[date] = set()
    todo_ordinals = {f.ordinal for f in todo}
    # A text file that ends inside a line is held once: unchanged at the next run, it was complete.
    pending_file = _pending_path(settings)
    pending = json.loads(pending_file.read_text(encoding="utf-8")) if pending_file.exists() else {}
    still_pending: dict[str, str] = {}
    # New versions of files ingested before, which this run will read (not refused, not waiting to be complete).
    replacing = {
        f.ordinal: _replacement(settings, f, versions[(f.source.name, f.rel)])
        for f in todo
        if (f.source.name, f.rel) in versions
        and f.ordinal not in refused
        and not (_ends_mid_line(f) and pending.get(f.rel) != f.sha256)
    }
    # They are read first: a row of another file that only the earlier version held is then loaded, not
    # counted as a duplicate of a row about to leave the lake.
    order = sorted(files, key=lambda f: (f.ordinal not in replacing, f.ordinal))
    reports: dict[int, FileReport] = {}
    # Loaded once for the run: the catalog stats every model file, libphonenumber reads a number in ~100-130 us.
    catalog = models.load_catalog(settings.models_path)
    phone_cache: dict[str, phones.Phone] = {}
    with _connect(settings, spill=True) as con:
        _load_state(con, settings)
        _load_replaced_rows(con, settings, [(f.source.name, f.rel) for f in files if f.ordinal in replacing])
        # Held rows go first: they were read before any file of this run, so a later row with their id is
        # the duplicate, as in one run over all the files.
        report.released, released_dates = release_held(
            con,
            settings,
            batch_id=batch_id,
            ingested_at=ingested_at,
            max_at=max_at,
            skip=[h for r in replacing.values() for h in r.held_files],
        )
        affected.update(released_dates)
        ingested: list[int] = []

        def flush() -> None:
            # One lake file per event_date for the whole run; named after its first file, so a retry of the
            # same batch (which skips the files already recorded) never overwrites an earlier attempt's file.
            releasing = db.fetch(con, "select count(*) from held_rows where occurred_at <= $m", {"m": max_at})[0][0]
            if ingested or releasing:
                stem = _free_stem(settings, batch_id, min(ingested)) if ingested else f"{batch_id}-held"
                flush_run(con, settings, batch_id=batch_id, stem=stem, max_at=max_at)
                ingested.clear()

        try:
            for f in progress.track(order, "ingest", label=lambda f: f.rel):
                if f.ordinal not in todo_ordinals:
                    reports[f.ordinal] = FileReport(f.source.name, f.rel, 0, 0, 0, 0, skipped=True)
                    continue
                try:
                    if f.ordinal in refused:
                        raise FileRefused(refused[f.ordinal])
                    if _ends_mid_line(f) and pending.get(f.rel) != f.sha256:
                        still_pending[f.rel] = f.sha256
                        raise FileNotReady("it ends inside a line (still being written?); read if unchanged next run")
                    file_report, dates = ingest_file(
                        con,
                        settings,
                        f,
                        columns[f.ordinal],
                        batch_id=batch_id,
                        ingested_at=ingested_at,
                        min_at=min_at,
                        max_at=max_at,
                        new_columns=drift.get(f.ordinal, []),
                        replaces=replacing.get(f.ordinal),
                        catalog=catalog,
                        phone_cache=phone_cache,
                    )
                except duckdb.Error as exc:
                    # A reader or cast error may quote the row; the original (chained) would reach the logs.
                    raise type(exc)(f"landing file {f.rel}: {pii.redacted(str(exc))}") from None
                except FileNotReady as why:
                    log.warning("landing file %s is not ready: %s", f.rel, why)
                    drop_file_tables(con)
                    reports[f.ordinal] = FileReport(f.source.name, f.rel, 0, 0, 0, 0, skipped=True, not_ready=str(why))
                    continue
                except FileRefused as why:
                    # Not recorded in the manifest: every run names it again until it is replaced or removed.
                    log.error("source %r, landing file %s refused, nothing of it loaded: %s", f.source.name, f.rel, why)
                    drop_file_tables(con)
                    reports[f.ordinal] = FileReport(f.source.name, f.rel, 0, 0, 0, 0, skipped=True, refused=str(why))
                    continue
                ingested.append(f.ordinal)
                reports[f.ordinal] = file_report
                affected.update(dates)
        except Exception:
            # A retry skips what is in the manifest: the files finished before the failure are kept.
            try:
                flush()
            except Exception:
                log.exception("could not write the files finished before the failure; a rerun ingests them again")
            raise
        flush()
    if (settings.handoff_dir / batch_id).exists():
        # Only beside a handoff of rows: a run that ingested nothing leaves the data root as it was.
        write_fingerprints(settings, batch_id, files)
    # In landing order whatever order they were read in.
    report.files = [reports[k] for k in sorted(reports)]
    if still_pending or pending_file.exists():
        pending_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = pending_file.with_name(f".{pending_file.name}.tmp")
        tmp.write_text(json.dumps(still_pending, sort_keys=True), encoding="utf-8")
        os.replace(tmp, pending_file)
    with contextlib.suppress(OSError):
        (settings.lake_dir / "_tmp").rmdir()  # only when empty
    report.affected_dates = sorted(affected)
    report.still_held = count_held(settings)
    for name in report.sources_refused():
        n = sum(1 for f in report.files if f.source == name and f.refused)
        log.error(
            "source %r: all %d new landing file(s) refused, nothing of this source loaded; its mapping may not fit"
            " its files (see each file's refusal)",
            name,
            n,
        )
    if report.held or report.released:
        # Held rows are not an error (a backfill makes many), but a row held forever is worth a look.
        log.log(
            logging.WARNING if report.held else logging.INFO,
            "held back: %d row(s) of this run later than %s (as_of + quality.max_future); %d held in all,"
            " loaded by the first run whose as_of passes them; %d released now",
            report.held,
            max_at,
            report.still_held,
            report.released,
        )
    return report


def require_events(settings: Settings, report: IngestReport) -> None:
    """Raise NothingToPublishError when the lake holds no event after ingest, saying what each source matched."""
    if any(settings.events_dir.glob("event_date=*/*.parquet")):
        return
    matched = {src.name: 0 for src in settings.sources}
    for f in report.files:
        matched[f.source] = matched.get(f.source, 0) + 1
    per_source = "; ".join(f"{s.name} {s.path!r}: {matched[s.name]} file(s)" for s in settings.sources)
    # A first run on an export whose files all lack a final line break holds every file once; "check the
    # glob" would send the user after the wrong problem.
    not_ready = [f"{f.file} ({f.not_ready})" for f in report.files if f.not_ready]
    refused = [f"{f.file} ({f.refused})" for f in report.files if f.refused]
    advice = ""
    if not_ready:
        advice += (
            f" {len(not_ready)} file(s) not ready, held for the next run: {'; '.join(not_ready)}. Run again: a file"
            " that ends inside a line is read once it is unchanged at a later run."
        )
    if refused:
        advice += f" {len(refused)} file(s) refused: {'; '.join(refused)}. Check those sources' mapping."
    advice = advice or " Check data_root and each source's path glob."
    raise NothingToPublishError(
        f"nothing to publish: the lake of data root {settings.root} holds no events after this run"
        f" (rows read {report.read}: quarantined {report.quarantined}, duplicates {report.duplicates};"
        f" blank {report.blank}). Landing files matched under {settings.landing_dir}:"
        f" {per_source or 'no sources configured'}.{advice}"
    )


# Ingest runs before any warehouse exists, as the flow's own first task (pipelines.nightly.ingest_task),
# so the catalog's runner never runs it; stg_events is its per-file SQL model.
models.register(models.Procedure(name="ingest", task="ingest", layer="staging", run=None))
