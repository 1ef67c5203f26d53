"""The M-Pesa organisation-portal statement (CSV or XLSX), parsed and checked against itself.

Layout (REFERENCE section 12.1): an optional header block (account holder, short code, time
period, opening/closing balance, totals), then a header row starting with `Receipt No.`, then one
row per entry. Dates come as DD-MM-YYYY, DD/MM/YYYY, ISO or Excel serials, all in Nairobi time;
amounts may carry thousands separators and currency letters; `Withdrawn` may be written negative.
Receipts are not unique: a charge row shares its payment's receipt. Receipts are read
upper-cased without whitespace.

Each entry gets a `role` (ROLES, first match wins): `not_moved` (the Transaction Status says the
money did not move), `reversal`, `charge` (a fee row), `transfer` (an internal movement such as a
settlement sweep) or `payment` (a payout when Withdrawn, a collection when Paid In).

A broken statement is not an exception: `Statement.problems` lists what does not add up
(opening + paid in - withdrawn != closing, running-balance breaks, totals that differ from the
header, unreadable values), and the `statement_integrity` check reports them. Only a file that is
not a statement at all (missing, unreadable, no `Receipt No.` header) raises StatementError.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice, pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from recon.money import cents_from_value, decimal_from_cents, format_cents
from recon.rules import NAIROBI, amount_gap

HEADER_SEARCH_ROWS = 40
# The org portal's column labels, in its order (REFERENCE 12.1).
PORTAL_HEADER = [
    "Receipt No.",
    "Completion Time",
    "Initiation Time",
    "Details",
    "Transaction Status",
    "Paid In",
    "Withdrawn",
    "Balance",
    "Balance Confirmed",
    "Reason Type",
    "Other Party Info",
    "Linked Transaction ID",
    "A/C No.",
]
SOURCE_COLUMNS = {
    "receipt no": "receipt",
    "completion time": "completed_at",
    "initiation time": "initiated_at",
    "details": "details",
    "transaction status": "transaction_status",
    "paid in": "paid_in_cents",
    "withdrawn": "withdrawn_cents",
    "balance": "balance_cents",
    "balance confirmed": "balance_confirmed",
    "reason type": "reason_type",
    "other party info": "other_party",
    "linked transaction id": "linked_transaction_id",
    "a/c no": "account_no",
}
ENTRY_COLUMNS = [*SOURCE_COLUMNS.values(), "line", "role"]
REQUIRED_COLUMNS = ("receipt", "completed_at", "paid_in_cents", "withdrawn_cents")
TIME_FORMATS = {
    "dmy-dash": "%d-%m-%Y %H:%M:%S",
    "dmy-dash-minutes": "%d-%m-%Y %H:%M",
    "dmy-slash": "%d/%m/%Y %H:%M:%S",
    "dmy-slash-minutes": "%d/%m/%Y %H:%M",
    "dmy-dash-date": "%d-%m-%Y",
    "dmy-slash-date": "%d/%m/%Y",
    "iso": "ISO8601",
}
TIME_SHAPES = [
    (re.compile(r"^\d{1,2}-\d{1,2}-\d{4} \d{1,2}:\d{2}:\d{2}$"), "dmy-dash"),
    (re.compile(r"^\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}:\d{2}$"), "dmy-slash"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}"), "iso"),
    (re.compile(r"^\d+(\.\d+)?$"), "excel"),
]
HEADER_DATE = re.compile(
    r"\d{1,2}[-/]\d{1,2}[-/]\d{4}(?: \d{1,2}:\d{2}(?::\d{2})?)?"
    r"|\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?"
)
HEADER_AMOUNTS = {
    "opening balance": "opening_cents",
    "closing balance": "closing_cents",
    "available balance": "available_cents",
    "total paid in": "total_paid_in_cents",
    "total withdrawn": "total_withdrawn_cents",
}
HEADER_TEXTS = {
    "account holder": "account_holder",
    "short code": "short_code",
    "account": "account",
}
EXCEL_EPOCH = pd.Timestamp("1899-12-30")
TIME_CELL_BYTES = 40  # wider than any time text we accept; a wider cell is read again as text
DMY_DIGITS = [0, 1, 3, 4, 6, 7, 8, 9, 11, 12, 14, 15, 17, 18]  # in 'DD-MM-YYYY HH:MM:SS'
DATE_ONLY = re.compile(r"\d{1,2}[-/]\d{1,2}[-/]\d{4}|\d{4}-\d{2}-\d{2}")
LAST_SECOND_OF_DAY = pd.Timedelta(days=1, seconds=-1)

# Row roles, in the order they are decided: the first that applies wins.
ROLE_NOT_MOVED = "not_moved"
ROLE_REVERSAL = "reversal"
ROLE_CHARGE = "charge"
ROLE_TRANSFER = "transfer"
ROLE_PAYMENT = "payment"
ROLES = (ROLE_NOT_MOVED, ROLE_REVERSAL, ROLE_CHARGE, ROLE_TRANSFER, ROLE_PAYMENT)
# Transaction Status values, lower-cased without spaces; blank counts as completed.
COMPLETED_STATUSES = frozenset({"completed", "success", "successful"})
NOT_MOVED_STATUSES = frozenset({"failed", "declined", "cancelled", "canceled", "expired"})
REVERSAL = r"\breversals?\b"
# A fee row's Reason Type ends with the word: 'Pay Bill Charge', but not 'Airtime Recharge' nor
# the B2C payout type 'Business Payment to Customer Withdrawal Charge Paid' (REFERENCE 12.2).
CHARGE = r"\bcharges?$"
INTERNAL_TRANSFER = r"settlement|transfer of funds|funds transfer"
# A payment the customer started (C2B: paybill from the menu or app, till, standing order), by
# its Reason Type or Details (REFERENCE 12.1); "Pay Utility" is an STK push's.
CUSTOMER_INITIATED = (
    r"^(?:pay bill|buy goods|merchant payment|customer merchant payment|standing order pay bill)\b"
)


MAX_AMOUNT = 1e13  # what DECIMAL(15,2) holds; larger cells are unreadable


class StatementError(Exception):
    """The file is not a statement we can read at all; the message names the file."""


@dataclass
class StatementHeader:
    """The header block's values; all None for a statement exported without one."""

    account_holder: str | None = None
    short_code: str | None = None
    account: str | None = None
    period_start: pd.Timestamp | None = None  # naive UTC, inclusive
    period_end: pd.Timestamp | None = None  # naive UTC, inclusive
    opening_cents: int | None = None
    closing_cents: int | None = None
    available_cents: int | None = None
    total_paid_in_cents: int | None = None
    total_withdrawn_cents: int | None = None


@dataclass(frozen=True)
class Problem:
    """One way the statement disagrees with itself."""

    kind: str
    line: int | None
    receipt: str | None
    expected_cents: int | None
    actual_cents: int | None
    reason: str
    source: str | None = None  # the file, when several statements are read together


@dataclass
class Statement:
    """Parsed entries (one row per statement row, times naive UTC, amounts int64 cents,
    `withdrawn_cents` positive), the header, and the integrity problems found."""

    source: str
    entries: pd.DataFrame
    header: StatementHeader = field(default_factory=StatementHeader)
    problems: list[Problem] = field(default_factory=list)
    parts: list[Statement] = field(default_factory=list)  # the files, when several were read

    @property
    def files(self) -> list[Statement]:
        return self.parts or [self]

    @property
    def time_periods(self) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """Each file's header Time Period (start, end inclusive, naive UTC), in time order;
        a file without one adds nothing (what it covers is unknown)."""
        periods = [
            (part.header.period_start, part.header.period_end)
            for part in self.files
            if part.header.period_start is not None and part.header.period_end is not None
        ]
        return sorted(periods)

    @property
    def without_time_period(self) -> list[str]:
        """The files whose header states no Time Period."""
        return [part.source for part in self.files if part.header.period_start is None]

    @property
    def period(self) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """From the first Time Period's start to the last one's end when every file states one,
        else the span of the entries' completion times."""
        periods = self.time_periods
        if periods and not self.without_time_period:
            return periods[0][0], max(end for _, end in periods)
        return self.rows_span

    def covers(self, times: pd.Series) -> np.ndarray:
        """Whether each time lies inside one of the Time Periods."""
        inside = np.zeros(len(times), dtype=bool)
        for start, end in self.time_periods:
            inside |= times.between(start, end).to_numpy()
        return inside

    @property
    def rows_span(self) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """The earliest and latest completion time of the entries (naive UTC), whatever the
        header says; (None, None) when no entry has one."""
        times = self.entries["completed_at"].dropna()
        if times.empty:
            return None, None
        return times.min(), times.max()


# -- reading ----------------------------------------------------------------------------------


def parse_statements(paths: list[str | Path]) -> Statement:
    """One or more statement files read as one: their rows together, each file's own
    integrity problems, and their Time Periods for coverage. Statements whose Time Periods
    overlap are refused (their common rows would count twice)."""
    statements = [parse_statement(path) for path in paths]
    if len(statements) == 1:
        return statements[0]
    _refuse_overlaps(statements)
    names = [Path(statement.source).name for statement in statements]
    entries = pd.concat(
        [part.entries.assign(file=name) for part, name in zip(statements, names, strict=True)],
        ignore_index=True,
    )
    problems = [
        replace(problem, source=name)
        for part, name in zip(statements, names, strict=True)
        for problem in part.problems
    ]
    return Statement(
        source=", ".join(statement.source for statement in statements),
        entries=entries,
        problems=problems,
        parts=statements,
    )


def _refuse_overlaps(statements: list[Statement]) -> None:
    dated = sorted(
        (part.header.period_start, part.header.period_end, part.source)
        for part in statements
        if part.header.period_start is not None and part.header.period_end is not None
    )
    for (_, end, first), (start, _, second) in pairwise(dated):
        if start <= end:
            raise StatementError(
                f"statements {first} and {second} overlap ({start:%Y-%m-%d %H:%M:%S} to "
                f"{end:%Y-%m-%d %H:%M:%S} UTC): give statements whose Time Periods do not overlap"
            )


def parse_statement(path: str | Path) -> Statement:
    """Read a CSV or XLSX statement and check it against itself."""
    path = Path(path)
    if not path.is_file():
        raise StatementError(f"statement file not found: {path}")
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        header_rows, body = _read_xlsx(path)
    else:
        header_rows, body = _read_csv(path)
    return build_statement(str(path), header_rows, body)


def build_statement(source: str, header_rows: list[list], body: pd.DataFrame) -> Statement:
    """A Statement from the header block's rows and the table (its own column names)."""
    header = parse_header(header_rows)
    body = _rename_columns(source, body)
    first_line = len(header_rows) + 2
    entries, problems = _entries(body, first_line)
    statement = Statement(source=source, entries=entries, header=header, problems=problems)
    statement.problems.extend(integrity_problems(statement))
    return statement


def _read_csv(path: Path) -> tuple[list[list], pd.DataFrame]:
    encoding = _csv_encoding(path)
    with path.open(newline="", encoding=encoding) as handle:
        first_rows = list(islice(csv.reader(handle), HEADER_SEARCH_ROWS))
    header_index = _header_index(path, first_rows)
    names = first_rows[header_index]
    fields = {name: SOURCE_COLUMNS.get(_normal_label(name), "") for name in names}
    # Amount columns are parsed by the C reader (thousands separators included); a column
    # with currency letters or other noise stays text and amount_cents cleans it. Time
    # columns come as UTF-8 bytes (blank: b""): creating a million distinct str objects
    # costs more than parsing the times.
    dtypes = {name: object for name, field_name in fields.items() if field_name[-6:] != "_cents"}
    times = [name for name, field_name in fields.items() if field_name.endswith("_at")]
    dtypes |= {name: f"S{TIME_CELL_BYTES}" for name in times}
    options = {
        "skiprows": header_index,
        "header": 0,
        "thousands": ",",
        "keep_default_na": False,
        "na_values": [""],
        "skipinitialspace": True,
        "skip_blank_lines": False,
        "encoding": encoding,
    }
    try:
        body = pd.read_csv(path, dtype=dtypes, **options)
        for name in times:
            if name in body.columns and _may_be_cut(body[name]):
                body[name] = pd.read_csv(path, usecols=[name], dtype=object, **options)[name]
    except (pd.errors.ParserError, ValueError) as error:
        raise StatementError(
            f"{path.name}: the rows under the header cannot be read "
            f"({str(error).strip().splitlines()[-1]})"
        ) from None
    return first_rows[:header_index], body


def _may_be_cut(cells: pd.Series) -> bool:
    """Whether a bytes cell fills its width, so the reader may have cut it short."""
    raw = cells.to_numpy()
    return bool(raw.size) and bool(raw.view(np.uint8)[raw.itemsize - 1 :: raw.itemsize].any())


def _csv_encoding(path: Path) -> str:
    with path.open("rb") as handle:
        sample = handle.read(65536)
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(sample) - 4:  # not just a character cut at the sample's end
            return "latin-1"
    return "utf-8-sig"


def _read_xlsx(path: Path) -> tuple[list[list], pd.DataFrame]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises many types for a file that is not a workbook
        raise StatementError(f"statement {path} is not a readable XLSX file: {error}") from None
    try:
        rows = [list(row) for row in workbook.worksheets[0].iter_rows(values_only=True)]
    finally:
        workbook.close()
    header_index = _header_index(path, rows[:HEADER_SEARCH_ROWS])
    names = [_cell_text(cell) for cell in rows[header_index]]
    width = len(names)
    body_rows = [
        [_blank_to_none(cell) for cell in (row + [None] * width)[:width]]
        for row in rows[header_index + 1 :]
    ]
    return rows[:header_index], pd.DataFrame(body_rows, columns=names, dtype=object)


def _blank_to_none(cell: object) -> object:
    if isinstance(cell, str):
        return cell.strip() or None
    return cell


def _header_index(path: Path, rows: list[list]) -> int:
    for index, row in enumerate(rows):
        cells = [_normal_label(cell) for cell in row if _cell_text(cell)]
        if cells and cells[0].startswith("receipt no"):
            return index
    raise StatementError(
        f"statement {path} has no header row starting with 'Receipt No.' "
        f"in its first {HEADER_SEARCH_ROWS} rows"
    )


def _rename_columns(source: str, body: pd.DataFrame) -> pd.DataFrame:
    renamed = {column: SOURCE_COLUMNS.get(_normal_label(column)) for column in body.columns}
    body = body[[column for column, name in renamed.items() if name]]
    body.columns = [renamed[column] for column in body.columns]
    body = body.loc[:, ~body.columns.duplicated()]
    missing = [name for name in REQUIRED_COLUMNS if name not in body.columns]
    if missing:
        raise StatementError(f"statement {source} lacks the columns {', '.join(missing)}")
    return body


def _normal_label(cell: object) -> str:
    return _cell_text(cell).lower().rstrip(":").rstrip(".").strip()


def _cell_text(cell: object) -> str:
    return "" if cell is None else str(cell).strip()


# -- header block -----------------------------------------------------------------------------


def parse_header(rows: list[list]) -> StatementHeader:
    """Label cells followed by their value cells; the time period wherever its dates are."""
    header = StatementHeader()
    for row in rows:
        cells = [_cell_text(cell) for cell in row]
        if any(_normal_label(cell).startswith("time period") for cell in cells):
            _read_period(header, " ".join(cells))
            continue
        for label, value in _labelled_values(cells):
            if label in HEADER_AMOUNTS:
                setattr(header, HEADER_AMOUNTS[label], cents_from_value(value))
            elif label in HEADER_TEXTS:
                setattr(header, HEADER_TEXTS[label], value)
    return header


def _labelled_values(cells: list[str]):
    for index, cell in enumerate(cells):
        label, _, inline = cell.partition(":")
        label = _normal_label(label)
        if label not in HEADER_AMOUNTS and label not in HEADER_TEXTS:
            continue
        following = [value for value in cells[index + 1 :] if value]
        value = inline.strip() or (following[0] if following else "")
        if value:
            yield label, value


def _read_period(header: StatementHeader, text: str) -> None:
    """From and To, inclusive: a To date without a time means the end of that Nairobi day."""
    dates = HEADER_DATE.findall(text)
    if len(dates) >= 2:
        start, end = parse_times(pd.Series(dates[:2], dtype=object))
        if DATE_ONLY.fullmatch(dates[1]):
            end += LAST_SECOND_OF_DAY  # no daylight saving in Nairobi: adding in UTC is the same
        header.period_start = None if pd.isna(start) else start
        header.period_end = None if pd.isna(end) else end


# -- entries ----------------------------------------------------------------------------------


def _entries(body: pd.DataFrame, first_line: int) -> tuple[pd.DataFrame, list[Problem]]:
    body = body.reset_index(drop=True)
    meaningful = _meaningful_rows(body)
    if not meaningful.all():
        body = body[meaningful]
    lines = pd.Series(np.flatnonzero(meaningful) + first_line, index=body.index)
    problems: list[Problem] = []
    entries = pd.DataFrame(index=body.index)
    for name in ENTRY_COLUMNS[:-2]:
        values = body[name] if name in body.columns else pd.Series(None, index=body.index)
        entries[name] = _convert_column(name, values, lines, problems)
    entries["withdrawn_cents"] = entries["withdrawn_cents"].abs()
    entries["line"] = lines
    entries["role"] = row_roles(entries)
    for line in lines[entries["receipt"].isna()]:
        problems.append(
            Problem(
                "missing_receipt",
                int(line),
                None,
                None,
                None,
                f"statement integrity: expected a receipt number != blank (line {line})",
            )
        )
    return entries.reset_index(drop=True), problems


def _meaningful_rows(body: pd.DataFrame) -> np.ndarray:
    """Rows with at least one cell filled. Each column is looked at only where the columns
    before it are all empty: nearly every row has a receipt, so that is one pass, not 13."""
    meaningful = _filled(body.iloc[:, 0]).copy()
    for name in body.columns[1:]:
        empty = np.flatnonzero(~meaningful)
        if not len(empty):
            break
        meaningful[empty] = _filled(body[name].iloc[empty])
    return meaningful


def _filled(values: pd.Series) -> np.ndarray:
    """Cells with a value; the CSV reader's time bytes are b"" when blank, not missing."""
    if values.dtype.kind == "S":
        return values.to_numpy() != b""
    return values.notna().to_numpy()


def _convert_column(name: str, values: pd.Series, lines: pd.Series, problems: list[Problem]):
    if name.endswith("_cents"):
        cents = amount_cents(values)
        _report_unreadable(name, values, cents, lines, problems)
        return cents
    if name.endswith("_at"):
        if values.dtype.kind == "S":  # the CSV reader's bytes
            times, values = _times_from_bytes(values)
        else:
            times = parse_times(values)
        _report_unreadable(name, values, times[values.index], lines, problems)
        return times
    if name in ("receipt", "linked_transaction_id"):
        return receipt_text(values)
    if name == "transaction_status":
        statuses = clean_text(values)
        known = flags_per_unique(statuses, _known_status, missing=True)
        _report_unreadable(name, statuses, statuses.where(known), lines, problems)
        return statuses
    return clean_text(values)


def clean_text(values: pd.Series) -> pd.Series:
    """Cells as str without surrounding blanks; missing stays missing."""
    return _cleaned(values, lambda texts: texts.astype("str").str.strip())


def receipt_text(values: pd.Series) -> pd.Series:
    """Receipts upper-cased without any whitespace (' tk5ay9 dlmg ' is 'TK5AY9DLMG'); blank
    is missing. Only the few cells that are not letters and digits alone are searched for
    whitespace."""
    return _cleaned(values, _normal_receipts)


def _normal_receipts(texts: pd.Series) -> pd.Series:
    receipts = texts.astype("str").str.upper()
    odd = receipts.notna().to_numpy() & ~receipts.str.isalnum().to_numpy(dtype=bool)
    if odd.any():
        squeezed = receipts[odd].str.replace(r"\s+", "", regex=True)
        receipts[odd] = squeezed.where(squeezed != "")
    return receipts


def _cleaned(values: pd.Series, clean) -> pd.Series:
    """`clean` (Series -> Series of str) applied to a column. Most text columns repeat a
    handful of values a million times and are cleaned once per distinct value (pandas' string
    methods are a Python call per element without pyarrow); receipts, nearly all distinct, are
    cleaned cell by cell rather than hashed first."""
    sample = values.head(1000).dropna()
    if sample.nunique() > len(sample) // 2:
        return clean(values)
    codes, uniques = pd.factorize(values.to_numpy(), use_na_sentinel=True)
    cleaned = clean(pd.Series(uniques, dtype=object)).array
    return pd.Series(cleaned.take(codes, allow_fill=True), index=values.index)


def flags_per_unique(values: pd.Series, predicate, *, missing: bool = False) -> np.ndarray:
    """`predicate` (Series of str -> Series of bool) evaluated once per distinct value and
    spread back as a boolean array; missing values get `missing`."""
    codes, uniques = pd.factorize(values.to_numpy(), use_na_sentinel=True)
    flags = predicate(pd.Series(uniques, dtype=object)).to_numpy(dtype=bool)
    return np.append(flags, missing)[codes]  # code -1 (missing) picks the appended flag


def _report_unreadable(name, values, converted, lines, problems) -> None:
    unreadable = _present(values) & converted.isna()
    column = next(label for label, field_name in SOURCE_COLUMNS.items() if field_name == name)
    for index in unreadable[unreadable].index:
        line = int(lines[index])
        problems.append(
            Problem(
                "unreadable_value",
                line,
                None,
                None,
                None,
                f"statement integrity: expected a readable {column.title()} != "
                f"{str(values[index])!r} (unreadable, line {line})",
            )
        )


def _present(values: pd.Series) -> pd.Series:
    """Cells with a value: the readers turn blank and whitespace-only cells into missing."""
    return values.notna()


def amount_cents(values: pd.Series) -> pd.Series:
    """Int64 cents from numbers or strings such as '1,234.50', '-300.00' or 'KES 20'.
    Rounding x * 100 is exact for amounts with at most two decimals (far below 2**53 cents)."""
    numbers = pd.to_numeric(values, errors="coerce")
    retry = numbers.isna() & _present(values)
    if retry.any():
        cleaned = values[retry].astype("str").str.replace(r"[^\d.\-]", "", regex=True)
        numbers = numbers.astype("float64")
        numbers[retry] = pd.to_numeric(cleaned, errors="coerce")
    numbers = numbers.astype("float64")
    # An amount no account can hold (or inf) is unreadable, not a number to overflow on.
    numbers[~np.isfinite(numbers) | (numbers.abs() >= MAX_AMOUNT)] = np.nan
    return (numbers * 100).round().astype("Int64")


def parse_times(values: pd.Series) -> pd.Series:
    """Naive UTC times from Nairobi-time cells: datetime objects, Excel serials or strings in
    any of the accepted formats (the most common one is detected and tried first)."""
    return _nairobi_to_utc(_local_times(values))


def _times_from_bytes(cells: pd.Series) -> tuple[pd.Series, pd.Series]:
    """parse_times for the CSV reader's UTF-8 bytes, and the text of the cells read as text.
    'DD-MM-YYYY HH:MM:SS' cells (or with slashes) are read straight from the bytes; the others
    are decoded and read as text cells, in the shape order the whole column suggests."""
    raw = cells.to_numpy()
    local = _dmy_from_bytes(raw, "-")
    slashed = np.flatnonzero(np.isnat(local))
    local[slashed] = _dmy_from_bytes(raw[slashed], "/")
    filled = raw != b""
    rest = np.flatnonzero(np.isnat(local) & filled)
    texts = pd.Series([cell.decode() for cell in raw[rest]], index=cells.index[rest], dtype=object)
    if len(rest):
        sample = pd.Series([cell.decode() for cell in raw[np.flatnonzero(filled)[:50]]])
        local[rest] = _local_times(texts, _time_shapes(sample)).to_numpy()
    return _nairobi_to_utc(pd.Series(local, index=cells.index)), texts


def _local_times(values: pd.Series, shapes: list[str] | None = None) -> pd.Series:
    """Nairobi times as written, the shapes tried in the given order (else as detected)."""
    values = values.reset_index(drop=True) if values.index.has_duplicates else values
    result = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    remaining = _present(values)
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        is_datetime = pd.Series(False, index=values.index)
    else:
        # NaT is a datetime too, and not one to keep.
        is_datetime = values.map(lambda v: isinstance(v, datetime) and not pd.isna(v)).astype(bool)
    if is_datetime.any():
        result[is_datetime] = pd.to_datetime(values[is_datetime]).astype("datetime64[us]")
        remaining &= ~is_datetime
    for shape in shapes or _time_shapes(values[remaining]):
        if not remaining.any():
            break
        parsed = _parse_shape(values[remaining], shape)
        result[parsed.index] = parsed
        remaining &= result.isna()
    return result


def _time_shapes(values: pd.Series) -> list[str]:
    """Every shape, the one the first readable sample has first."""
    shapes = ["dmy-dash", "dmy-slash", "iso", "excel", *list(TIME_FORMATS)[1:]]
    sample = values.head(50).astype("str").str.strip()
    for text in sample:
        for pattern, shape in TIME_SHAPES:
            if pattern.match(text):
                return [shape, *[other for other in shapes if other != shape]]
    return shapes


def _parse_shape(values: pd.Series, shape: str) -> pd.Series:
    if shape == "excel":
        serials = pd.to_numeric(values, errors="coerce")
        serials = serials.where((serials > 0) & (serials < 2_958_466))  # Excel's 9999-12-31
        delta = pd.to_timedelta((serials * 86_400_000).round(), unit="ms")
        return (EXCEL_EPOCH + delta).astype("datetime64[us]")
    text = values.astype("str")
    if shape in ("dmy-dash", "dmy-slash"):
        fast = _fixed_width_dmy(text, "-" if shape == "dmy-dash" else "/")
        text = text[fast.isna()]
        if text.empty:
            return fast
    text = text.str.strip()
    parsed = pd.to_datetime(text, format=TIME_FORMATS[shape], errors="coerce")
    if getattr(parsed.dt, "tz", None) is not None:  # ISO text with an offset
        parsed = parsed.dt.tz_convert(NAIROBI).dt.tz_localize(None)
    parsed = parsed.astype("datetime64[us]")
    if shape in ("dmy-dash", "dmy-slash"):
        fast[parsed.index] = parsed
        return fast
    return parsed


def _fixed_width_dmy(text: pd.Series, separator: str) -> pd.Series:
    """'DD-MM-YYYY HH:MM:SS' read digit by digit from a byte matrix, the portal's usual shape,
    without strptime's cost per cell. Cells of another shape, or not a valid time (31-02,
    25:00), come back missing for the general parser, so every cell read here reads the same
    as with strptime."""
    try:
        raw = text.to_numpy(dtype="S20", na_value="")
    except UnicodeEncodeError:  # non-ASCII somewhere: leave every cell to the general parser
        return pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]")
    return pd.Series(_dmy_from_bytes(raw, separator), index=text.index)


def _dmy_from_bytes(raw: np.ndarray, separator: str) -> np.ndarray:
    """_fixed_width_dmy on bytes cells (numpy S dtype, at least 20 wide): datetime64[us]."""
    grid = raw.view(np.uint8).reshape(len(raw), raw.itemsize)
    digits = grid[:, :19] - np.uint8(ord("0"))  # bytes below '0' wrap round to large values
    fixed = (digits[:, DMY_DIGITS] <= 9).all(axis=1) & (grid[:, 19:] == 0).all(axis=1)
    for position, character in ((2, separator), (5, separator), (10, " "), (13, ":"), (16, ":")):
        fixed &= grid[:, position] == ord(character)

    def number(first: int, last: int) -> np.ndarray:
        value = np.zeros(len(raw), dtype=np.int64)
        for position in range(first, last + 1):
            value = value * 10 + digits[:, position]
        return np.where(fixed, value, 1)

    year, month, day = number(6, 9), number(3, 4), number(0, 1)
    hour, minute, second = number(11, 12), number(14, 15), number(17, 18)
    fixed &= (year >= 1) & (month <= 12) & (month >= 1) & (day >= 1)
    fixed &= (hour <= 23) & (minute <= 59) & (second <= 59)
    months = np.where(fixed, (year - 1970) * 12 + month - 1, 0).astype("datetime64[M]")
    dates = months.astype("datetime64[D]") + (day - 1)
    fixed &= dates.astype("datetime64[M]") == months  # no 31 February
    times = dates.astype("datetime64[us]") + (hour * 3600 + minute * 60 + second) * 10**6
    times[~fixed] = np.datetime64("NaT")
    return times


def _nairobi_to_utc(local: pd.Series) -> pd.Series:
    utc = local.dt.tz_localize(NAIROBI, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
    return utc.dt.tz_localize(None).astype("datetime64[us]")


# -- row roles --------------------------------------------------------------------------------


def row_roles(entries: pd.DataFrame) -> np.ndarray:
    """Each entry's role (one of ROLES, as str), the first that applies in ROLES' order."""
    description = _description(entries)
    decided = [
        flags_per_unique(entries["transaction_status"], _says_not_moved),
        _mentions(description, REVERSAL) | _linked_to_another_receipt(entries),
        _mentions(description, CHARGE) & _withdrawn_only(entries),
        _mentions(entries["reason_type"], INTERNAL_TRANSFER)
        | _mentions(entries["details"], INTERNAL_TRANSFER),
    ]
    first = np.select(decided, range(len(decided)), default=ROLES.index(ROLE_PAYMENT))
    # Taking from an object array shares five str objects instead of making a million.
    return np.array(ROLES, dtype=object).take(first)


def customer_initiated(entries: pd.DataFrame) -> np.ndarray:
    """Whether each entry reads as a C2B payment: one a customer started from the phone."""
    return _mentions(_description(entries), CUSTOMER_INITIATED)


def _status_word(texts: pd.Series) -> pd.Series:
    return texts.str.lower().str.replace(r"\s+", "", regex=True)


def _says_not_moved(texts: pd.Series) -> pd.Series:
    return _status_word(texts).isin(NOT_MOVED_STATUSES)


def _known_status(texts: pd.Series) -> pd.Series:
    words = _status_word(texts)
    return words.isin(COMPLETED_STATUSES | NOT_MOVED_STATUSES) | (words == "")


def _description(entries: pd.DataFrame) -> pd.Series:
    """The Reason Type, or the Details where the Reason Type is blank."""
    reasons = entries["reason_type"]
    blank = np.flatnonzero(~flags_per_unique(reasons, lambda texts: texts.str.strip() != ""))
    if not len(blank):
        return reasons
    described = reasons.copy()
    described.iloc[blank] = entries["details"].iloc[blank]
    return described


def _mentions(texts: pd.Series, pattern: str) -> np.ndarray:
    """Whether each text matches `pattern`, case-insensitive, its spaces collapsed."""

    def matches(uniques: pd.Series) -> pd.Series:
        collapsed = uniques.str.replace(r"\s+", " ", regex=True).str.strip()
        return collapsed.str.contains(pattern, case=False, regex=True)

    return flags_per_unique(texts, matches)


def _linked_to_another_receipt(entries: pd.DataFrame) -> np.ndarray:
    linked = entries["linked_transaction_id"]
    listed = np.flatnonzero(linked.notna().to_numpy())
    another = np.zeros(len(entries), dtype=bool)
    own = entries["receipt"].iloc[listed].to_numpy()
    another[listed] = linked.iloc[listed].to_numpy() != own
    return another


def _withdrawn_only(entries: pd.DataFrame) -> np.ndarray:
    withdrawn = entries["withdrawn_cents"].notna().to_numpy()
    paid_in = entries["paid_in_cents"].fillna(0).to_numpy(dtype=np.int64) != 0
    return withdrawn & ~paid_in


# -- integrity --------------------------------------------------------------------------------


def integrity_problems(statement: Statement) -> list[Problem]:
    """What does not add up: balance breaks, opening + in - out != closing, totals vs header,
    entries outside the header's period."""
    return [
        *balance_breaks(statement),
        *opening_closing_problems(statement),
        *total_problems(statement),
        *outside_period_problems(statement),
    ]


def chronological(entries: pd.DataFrame) -> pd.DataFrame:
    """Entries oldest first: portal exports list the newest first, some exports the oldest.
    The listing is taken as newest first when more consecutive completion times step down
    than up or, as many stepping each way (all in one second, say), when the running balance
    breaks less often read backwards; otherwise as listed."""
    steps = np.diff(entries["completed_at"].dropna().to_numpy())
    downs = int((steps < np.timedelta64(0)).sum())
    ups = int((steps > np.timedelta64(0)).sum())
    if downs != ups:
        newest_first = downs > ups
    else:
        with_balance = entries[entries["balance_cents"].notna()]
        newest_first = _break_count(with_balance.iloc[::-1]) < _break_count(with_balance)
    return entries.iloc[::-1] if newest_first else entries


def _break_count(entries: pd.DataFrame) -> int:
    """How many rows break the running balance in the order given (entries with a Balance)."""
    return int(_differs(_expected_balances(entries), entries["balance_cents"]).sum())


def _expected_balances(entries: pd.DataFrame, opening_cents: int | None = None) -> pd.Series:
    """Each row's previous Balance + its Paid In - Withdrawn; the first row's previous is
    `opening_cents` (its expected balance missing when None). The entries all have a Balance."""
    movement = entries["paid_in_cents"].fillna(0) - entries["withdrawn_cents"].fillna(0)
    previous = entries["balance_cents"].shift(1)
    if opening_cents is not None and len(previous):
        previous.iloc[0] = opening_cents
    return previous + movement


def _differs(expected: pd.Series, actual: pd.Series) -> np.ndarray:
    return (expected.notna() & (expected != actual)).fillna(False).to_numpy(dtype=bool)


def balance_breaks(statement: Statement) -> list[Problem]:
    """Rows whose Balance is not the previous Balance + Paid In - Withdrawn (the first row is
    checked against the header's opening balance when there is one)."""
    entries = chronological(statement.entries)
    entries = entries[entries["balance_cents"].notna()]
    if entries.empty:
        return []
    expected = _expected_balances(entries, statement.header.opening_cents)
    broken = _differs(expected, entries["balance_cents"])
    rows = entries[broken]
    return [
        Problem(
            "balance_break",
            int(row.line),
            row.receipt,
            int(want),
            int(row.balance_cents),
            f"statement integrity: balance break at line {row.line}: expected "
            f"{format_cents(want)} != balance {format_cents(row.balance_cents)} "
            f"({_difference(want, row.balance_cents)})",
        )
        for row, want in zip(rows.itertuples(), expected[broken], strict=True)
    ]


def opening_closing_problems(statement: Statement) -> list[Problem]:
    header = statement.header
    if header.opening_cents is None or header.closing_cents is None:
        return []
    paid_in = int(statement.entries["paid_in_cents"].fillna(0).sum())
    withdrawn = int(statement.entries["withdrawn_cents"].fillna(0).sum())
    expected = header.opening_cents + paid_in - withdrawn
    if expected == header.closing_cents:
        return []
    return [
        Problem(
            "opening_closing",
            None,
            None,
            expected,
            header.closing_cents,
            f"statement integrity: opening {format_cents(header.opening_cents)} + paid in "
            f"{format_cents(paid_in)} - withdrawn {format_cents(withdrawn)}: expected closing "
            f"{format_cents(expected)} != closing {format_cents(header.closing_cents)} "
            f"({_difference(expected, header.closing_cents)})",
        )
    ]


def total_problems(statement: Statement) -> list[Problem]:
    totals = [
        ("paid in", statement.header.total_paid_in_cents, "paid_in_cents"),
        ("withdrawn", statement.header.total_withdrawn_cents, "withdrawn_cents"),
    ]
    problems = []
    for label, header_total, column in totals:
        if header_total is None:
            continue
        rows_total = int(statement.entries[column].fillna(0).sum())
        if abs(header_total) != rows_total:
            problems.append(
                Problem(
                    f"total_{column.removesuffix('_cents')}",
                    None,
                    None,
                    abs(header_total),
                    rows_total,
                    f"statement integrity: total {label}: expected "
                    f"{format_cents(abs(header_total))} (header) != rows "
                    f"{format_cents(rows_total)} ({_difference(abs(header_total), rows_total)})",
                )
            )
    return problems


def outside_period_problems(statement: Statement) -> list[Problem]:
    start, end = statement.header.period_start, statement.header.period_end
    if start is None or end is None:
        return []
    times = statement.entries["completed_at"]
    outside = statement.entries[(times < start) | (times > end)]
    return [
        Problem(
            "outside_period",
            int(row.line),
            row.receipt,
            None,
            None,
            f"statement integrity: expected a time within {start:%Y-%m-%d %H:%M:%S} to "
            f"{end:%Y-%m-%d %H:%M:%S} UTC != {row.completed_at:%Y-%m-%d %H:%M:%S} "
            f"(outside the period, line {row.line})",
        )
        for row in outside.itertuples()
    ]


def _difference(expected: int, actual: int) -> str:
    return amount_gap(decimal_from_cents(expected), decimal_from_cents(actual))
