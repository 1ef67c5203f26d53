"""The B2C tariff: what the business is charged per payout, by amount band and by the date each
tariff took effect, read from a CSV file (the shipped one is recon/tariffs/b2c.csv).

The file: lines starting with '#' (and blank lines) are notes; then a header row
`effective_from,amount_from,amount_to,registered,unregistered,withdrawal_charges_paid,source`;
then one row per amount band. `effective_from` is the Nairobi day (YYYY-MM-DD) the tariff took
effect; the rows of one tariff share it, tariffs come in date order, and only the first may
leave it blank (in force before every dated one; its start is unknown). Band ends are whole
shillings, both included; a tariff's bands follow each other without gap or overlap. A charge
is shillings with at most two decimals, or `unknown`: a payout in an unknown band is reported
as not checked, never as clean. `source` says where the band's figures come from.

`registered` is the charge of a payout to a registered M-Pesa customer; `unregistered` to an
unregistered one; `withdrawal_charges_paid` the charge of the variant where the business also
pays the recipient's withdrawal charge (the statement's Reason Type says 'Withdrawal Charge
Paid'). A file that breaks any of this is refused with TariffError naming the file and line.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path

import numpy as np

from recon.rules import InvalidValue, to_decimal

SHIPPED_TARIFF = Path(__file__).resolve().parent / "tariffs" / "b2c.csv"
COLUMNS = (
    "effective_from",
    "amount_from",
    "amount_to",
    "registered",
    "unregistered",
    "withdrawal_charges_paid",
    "source",
)
CHARGE_COLUMNS = ("registered", "unregistered", "withdrawal_charges_paid")
UNKNOWN = "unknown"


class TariffError(Exception):
    """A tariff file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class Band:
    """One amount band: its ends (whole shillings, both included, in cents) and its charges in
    cents per kind of payout (None: unknown)."""

    low_cents: int
    high_cents: int
    charges: dict[str, int | None]
    source: str
    line: int

    @property
    def text(self) -> str:
        return f"{self.low_cents // 100:,}-{self.high_cents // 100:,}"


@dataclass(frozen=True)
class TariffVersion:
    """The bands in force from `effective_from` (None: from before every dated version)."""

    effective_from: date | None
    bands: tuple[Band, ...]

    @property
    def since_text(self) -> str:
        return "date unknown" if self.effective_from is None else f"{self.effective_from}"


@dataclass(frozen=True)
class Quote:
    """What the tariff says of payouts: per payout, the expected charge in cents (-1 when the
    band's charge is unknown or no band holds the amount), and the band and tariff that say so
    (empty where none does)."""

    cents: np.ndarray
    bands: np.ndarray  # of str


@dataclass(frozen=True)
class Tariff:
    """Every tariff version of a file, oldest first."""

    source: str
    versions: tuple[TariffVersion, ...]

    def in_force(self, day: date) -> TariffVersion | None:
        """The version in force on the Nairobi day `day` (None before the first dated one)."""
        current = None
        for version in self.versions:
            if version.effective_from is None or version.effective_from <= day:
                current = version
        return current

    def quote(self, amounts_cents: np.ndarray, days: np.ndarray, kinds: np.ndarray) -> Quote:
        """The charge of each payout of `amounts_cents` (int64), paid on `days` (Nairobi,
        datetime64[D]), of `kinds` (one of CHARGE_COLUMNS each)."""
        cents = np.full(len(amounts_cents), -1, dtype=np.int64)
        bands = np.full(len(amounts_cents), "", dtype=object)
        starts = [_day64(version.effective_from) for version in self.versions]
        for number, version in enumerate(self.versions):
            ends = starts[number + 1] if number + 1 < len(starts) else np.datetime64("9999-12-31")
            mine = np.flatnonzero((days >= starts[number]) & (days < ends))
            highs = np.array([band.high_cents for band in version.bands], dtype=np.int64)
            amounts = amounts_cents[mine]
            found = np.searchsorted(highs, amounts, side="left")
            held = (found < len(highs)) & (amounts >= version.bands[0].low_cents)
            texts = np.array(
                [f"band {band.text}, tariff from {version.since_text}" for band in version.bands],
                dtype=object,
            )
            bands[mine[held]] = texts[found[held]]
            for kind in CHARGE_COLUMNS:
                charges = [band.charges[kind] for band in version.bands]
                table = np.array([-1 if c is None else c for c in charges], dtype=np.int64)
                of_kind = held & (kinds[mine] == kind)
                cents[mine[of_kind]] = table[found[of_kind]]
        return Quote(cents, bands)


def _day64(day: date | None) -> np.datetime64:
    return np.datetime64("0001-01-01") if day is None else np.datetime64(day, "D")


# -- reading ------------------------------------------------------------------------------------


@cache
def shipped_tariff() -> Tariff:
    """The tariff shipped with the project, read once."""
    return load_tariff(SHIPPED_TARIFF)


def load_tariff(path: str | Path) -> Tariff:
    """The tariff in `path`, checked whole; TariffError naming the line otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise TariffError(f"tariff {path}: cannot be read ({error})") from None
    return parse_tariff(text, str(path))


def parse_tariff(text: str, source: str) -> Tariff:
    rows = _data_rows(text, source)
    if not rows:
        raise TariffError(f"tariff {source}: no header row ({','.join(COLUMNS)})")
    header_line, header = rows[0]
    if [cell.strip().lower() for cell in header] != list(COLUMNS):
        raise TariffError(
            f"tariff {source} line {header_line}: expected the header {','.join(COLUMNS)}, "
            f"not {','.join(header)}"
        )
    bands = [_band_row(source, line, cells) for line, cells in rows[1:]]
    if not bands:
        raise TariffError(f"tariff {source}: no bands under the header")
    return Tariff(source, _versions(source, bands))


def _data_rows(text: str, source: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each row that is not a note or blank."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rows.append((number, next(csv.reader(io.StringIO(line)))))
        except csv.Error as error:
            raise TariffError(f"tariff {source} line {number}: not a CSV row ({error})") from None
    return rows


def _band_row(source: str, line: int, cells: list[str]) -> tuple[date | None, Band]:
    where = f"tariff {source} line {line}"
    if len(cells) != len(COLUMNS):
        raise TariffError(f"{where}: expected {len(COLUMNS)} cells, not {len(cells)}")
    values = dict(zip(COLUMNS, (cell.strip() for cell in cells), strict=True))
    effective = _day(where, values["effective_from"])
    low = _shillings(where, "amount_from", values["amount_from"])
    high = _shillings(where, "amount_to", values["amount_to"])
    if low < 1 or high < low:
        raise TariffError(
            f"{where}: expected 1 <= amount_from <= amount_to, not {low:,} to {high:,}"
        )
    charges = {name: _charge(where, name, values[name]) for name in CHARGE_COLUMNS}
    return effective, Band(low * 100, high * 100, charges, values["source"], line)


def _day(where: str, text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise TariffError(
            f"{where}: effective_from must be a date YYYY-MM-DD, not {text!r}"
        ) from None


def _shillings(where: str, name: str, text: str) -> int:
    try:
        number = to_decimal(text, name)
    except InvalidValue as error:
        raise TariffError(f"{where}: {error}") from None
    if number != number.to_integral_value():
        raise TariffError(f"{where}: {name} must be whole shillings, not {text!r}")
    return int(number)


def _charge(where: str, name: str, text: str) -> int | None:
    if text.lower() == UNKNOWN:
        return None
    if not text:
        raise TariffError(f"{where}: {name} is blank: write a charge or '{UNKNOWN}'")
    try:
        number = to_decimal(text, name)
    except InvalidValue as error:
        raise TariffError(f"{where}: {error} (or '{UNKNOWN}')") from None
    if number < 0 or number != number.quantize(Decimal("0.01")):
        raise TariffError(
            f"{where}: {name} must be shillings with at most two decimals, not {text!r}"
        )
    return int(number.scaleb(2))


def _versions(source: str, rows: list[tuple[date | None, Band]]) -> tuple[TariffVersion, ...]:
    """Rows grouped into versions by effective_from, each checked: dates ordered, the blank
    date first only, bands contiguous."""
    versions: list[TariffVersion] = []
    for effective, band in rows:
        where = f"tariff {source} line {band.line}"
        if versions and versions[-1].effective_from == effective:
            previous = versions[-1].bands[-1]
            if band.low_cents != previous.high_cents + 100:
                raise TariffError(
                    f"{where}: expected the band to start at {previous.high_cents // 100 + 1:,} "
                    f"(after line {previous.line}'s {previous.text}), not "
                    f"{band.low_cents // 100:,} (bands must not overlap or leave a gap)"
                )
            versions[-1] = TariffVersion(effective, (*versions[-1].bands, band))
            continue
        if versions and (effective is None or _before(effective, versions)):
            raise TariffError(
                f"{where}: effective_from {effective or 'blank'} must come after "
                f"{versions[-1].since_text} (tariffs in date order, only the first undated, "
                "each tariff's rows together)"
            )
        versions.append(TariffVersion(effective, (band,)))
    return tuple(versions)


def _before(effective: date, versions: list[TariffVersion]) -> bool:
    latest = versions[-1].effective_from
    return latest is not None and effective <= latest
