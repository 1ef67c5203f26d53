"""The B2C tariff file: the shipped one reads and says where its figures come from; a file that
is not a usable tariff is refused with its line named, and the CLI stops on it with one line."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from recon.cli import main
from recon.tariff import (
    COLUMNS,
    SHIPPED_TARIFF,
    TariffError,
    load_tariff,
    parse_tariff,
    shipped_tariff,
)

HEADER = ",".join(COLUMNS)


def tariff_text(*rows: str) -> str:
    return "\n".join(["# a note", HEADER, *rows]) + "\n"


def quote(tariff, amount: str, day: str, kind: str = "registered") -> tuple[int, str]:
    found = tariff.quote(
        np.array([int(float(amount) * 100)]),
        np.array([day], dtype="datetime64[D]"),
        np.array([kind], dtype=object),
    )
    return int(found.cents[0]), str(found.bands[0])


def test_the_shipped_tariff_reads_and_names_a_source_for_every_band():
    tariff = shipped_tariff()

    (version,) = tariff.versions
    assert version.effective_from is None  # neither source is dated
    assert {band.source for band in version.bands} == {"form", "press", "none"}
    assert quote(tariff, "1000", "2025-11-05") == (500, "band 501-1,000, tariff from date unknown")
    assert quote(tariff, "100", "2025-11-05")[0] == 0
    assert quote(tariff, "25000", "2025-11-05")[0] == 1200
    assert quote(tariff, "300", "2025-11-05", "withdrawal_charges_paid")[0] == 3400
    assert "Safaricom" in SHIPPED_TARIFF.read_text()


@pytest.mark.parametrize(
    "amount, kind",
    [("17000", "registered"), ("200000", "registered"), ("1000", "unregistered")],
    ids=["between the form and the press report", "above the press report", "unregistered"],
)
def test_the_shipped_tariff_leaves_what_no_source_gives_unknown(amount, kind):
    assert quote(shipped_tariff(), amount, "2025-11-05", kind)[0] == -1


def test_the_tariff_in_force_is_the_latest_dated_on_or_before_the_day():
    tariff = parse_tariff(
        tariff_text(
            ",1,1000,5,unknown,unknown,old",
            "2025-11-05,1,1000,7,unknown,unknown,new",
        ),
        "t.csv",
    )

    assert quote(tariff, "500", "2025-11-04")[0] == 500
    assert quote(tariff, "500", "2025-11-05")[0] == 700
    assert tariff.in_force(date(2025, 11, 4)).effective_from is None


def test_an_amount_outside_every_band_has_no_charge():
    tariff = parse_tariff(tariff_text("2025-01-01,10,1000,5,unknown,unknown,x"), "t.csv")

    assert quote(tariff, "5", "2025-11-05") == (-1, "")
    assert quote(tariff, "1001", "2025-11-05") == (-1, "")
    assert quote(tariff, "500", "2024-12-31") == (-1, "")


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [",1,100,0,unknown,unknown,x", ",102,500,5,unknown,unknown,x"],
            "line 4: expected the band to start at 101",
        ),
        (
            [",1,100,0,unknown,unknown,x", ",90,500,5,unknown,unknown,x"],
            "line 4: expected the band to start at 101",
        ),
        (
            ["2025-02-01,1,100,0,unknown,unknown,x", "2025-01-01,1,100,0,unknown,unknown,x"],
            "line 4: effective_from 2025-01-01 must come after 2025-02-01",
        ),
        (
            ["2025-02-01,1,100,0,unknown,unknown,x", ",1,100,0,unknown,unknown,x"],
            "line 4: effective_from blank must come after",
        ),
        ([",1,100,0.5.1,unknown,unknown,x"], "line 3: registered: must be a number"),
        ([",1,100,5.255,unknown,unknown,x"], "line 3: registered must be shillings with at most"),
        ([",1,100,-5,unknown,unknown,x"], "line 3: registered must be shillings"),
        ([",1,100,,unknown,unknown,x"], "line 3: registered is blank: write a charge or 'unknown'"),
        ([",1,100.5,5,unknown,unknown,x"], "line 3: amount_to must be whole shillings"),
        ([",100,1,5,unknown,unknown,x"], "line 3: expected 1 <= amount_from <= amount_to"),
        (["05/11/2025,1,100,5,unknown,unknown,x"], "line 3: effective_from must be a date"),
        ([",1,100,5,unknown,unknown"], "line 3: expected 7 cells, not 6"),
        ([], "no bands under the header"),
    ],
    ids=[
        "gap",
        "overlap",
        "dates out of order",
        "undated after dated",
        "unreadable charge",
        "fractions of a cent",
        "negative",
        "blank charge",
        "fractional band end",
        "band upside down",
        "not an ISO date",
        "short row",
        "no bands",
    ],
)
def test_a_malformed_tariff_is_refused_naming_the_line(rows, message):
    with pytest.raises(TariffError) as refused:
        parse_tariff(tariff_text(*rows), "t.csv")

    assert str(refused.value).startswith("tariff t.csv")
    assert message in str(refused.value)


def test_a_file_with_another_header_is_refused():
    with pytest.raises(TariffError, match="line 1: expected the header"):
        parse_tariff("from,to,charge\n1,100,5\n", "t.csv")


def test_a_missing_tariff_file_is_refused(tmp_path):
    with pytest.raises(TariffError, match="cannot be read"):
        load_tariff(tmp_path / "none.csv")


def test_the_cli_stops_with_one_line_on_a_malformed_tariff(engine, database_url, tmp_path, capsys):
    tariff = tmp_path / "tariff.csv"
    tariff.write_text(tariff_text(",1,100,0,unknown,unknown,x", ",150,500,5,unknown,unknown,x"))

    status = main(
        ["--database-url", database_url, "--tariff", str(tariff), "--out", str(tmp_path / "out")]
    )

    assert status == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"recon: tariff {tariff} line 4: expected the band to start at 101 (after line 3's "
        "1-100), not 150 (bands must not overlap or leave a gap)"
    )
    assert not (tmp_path / "out").exists()
