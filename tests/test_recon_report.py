"""The report: one data object rendered to text, HTML, XLSX, CSV and a dict."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook

from recon.checks import AT_RISK, CHECK_NAMES, Options, run_checks
from recon.frames import Frames
from recon.report import Report
from tests.recon_support import AS_OF, legacy_payout, legacy_result, new_payout, new_result

OPTIONS = Options(as_of=AS_OF, since=AS_OF.replace(day=5), until=AS_OF)


@pytest.fixture
def report() -> Report:
    frames = Frames.from_records(
        payouts=[
            new_payout("p01", "1000.00", "completed", ocid="OC1", hour=20),
            legacy_payout("p05", "250.00", "pending", reference="R5", hour=2),
        ],
        results=[
            new_result("r1", ocid="OC1", code=0, amount="100.00", txn="TK1", hour=20),
            legacy_result("r9", reference="NOBODY", code=1),
        ],
    )
    return Report(findings=run_checks(frames, OPTIONS), options=OPTIONS)


def test_text_rendering(report):
    assert report.render() == TEXT_SNAPSHOT


TEXT_SNAPSHOT = """\
M-Pesa reconciliation report
Period 2025-11-05 00:00:00 to 2025-11-06 00:00:00 UTC, as of 2025-11-06 00:00:00 UTC
No statement given: missing_from_statement, unrecorded_statement_entry, c2b_missing_from_statement, c2b_without_confirmation, statement_amount_mismatch, reversal, statement_integrity, statement_coverage, charge_mismatch, the statement side of duplicate_receipt not checked.
3 findings, KES 1,150.00 at risk.

Summary by check
check                         count     KES at risk
amount_mismatch                   1          900.00
orphan_callback                   1            0.00
failed_result                     0      count only
stale_pending                     1          250.00
duplicate_callback                0      count only
paid_twice                        0            0.00
status_conflict                   0            0.00
possible_double_payout            0            0.00
stk_amount_mismatch               0            0.00
unreadable_value                  0      count only
duplicate_receipt                 0            0.00
missing_from_statement            0            0.00
unrecorded_statement_entry        0            0.00
c2b_missing_from_statement        0            0.00
c2b_without_confirmation          0            0.00
c2b_unknown_bill_ref              0      count only
statement_amount_mismatch         0            0.00
reversal                          0            0.00
statement_integrity               0      count only
statement_coverage                0      count only
charge_mismatch                   0            0.00
KES at risk: money that may have left without being recorded, or been recorded without leaving, counted once per shilling across checks; a check marked 'count only' moves no money of its own (a failure, a redelivered callback, a statement that disagrees with itself).

Match rate
results matched to a payout             1 / 2          50.0%
payouts with a result                   1 / 2          50.0%

Aging of open items
age         count     KES at risk
<1 h            0            0.00
1-4 h           1          900.00
4-24 h          1          250.00
1-3 d           0            0.00
3-7 d           0            0.00
> 7 d           0            0.00

Charges against the tariff (B2C payouts on the statement, per Nairobi day)
No statement given: charges not checked.

Top findings
 1. [amount_mismatch] payout REF-p01: amount mismatch: requested 1,000.00 != paid 100.00 (900.00 short)
 2. [stale_pending] payout R5: stale pending: expected a final status within 30 min != pending after 22.0 h (21.5 h overdue)
 3. [orphan_callback] result r9: orphan callback: expected 1 matching payout for NOBODY != 0 found (0.00 unaccounted)
"""  # noqa: E501 (the report's lines are as long as its reasons)


def test_clean_report_says_what_it_checked_and_exits_0():
    frames = Frames.from_records(
        payouts=[new_payout("p01", "100.00", "completed", ocid="OC1", hour=20)],
        results=[new_result("r1", ocid="OC1", code=0, amount="100.00", txn="TK1", hour=20)],
    )
    clean = Report(findings=run_checks(frames, OPTIONS), options=OPTIONS)

    assert clean.headline == "Clean: no findings in 1 payout, 1 callback and 0 collections."
    assert clean.exit_code == 0


def test_a_period_without_traffic_says_so_instead_of_clean():
    quiet = Report(findings=run_checks(Frames.from_records(), OPTIONS), options=OPTIONS)

    assert quiet.headline == (
        "No traffic in the period: no payouts, callbacks or collections, so nothing was checked."
    )
    assert "Clean" not in quiet.render() and "Clean" not in quiet.to_html()
    assert quiet.exit_code == 0


def test_html_has_summary_rows_and_inline_charts(report):
    html = report.to_html()

    assert "<td>amount_mismatch</td>" in html
    assert "requested 1,000.00 != paid 100.00" in html
    assert html.count('src="data:image/png;base64,') == 3


def test_html_for_email_references_charts_by_cid(report):
    html = report.to_html(images="cid")

    assert 'src="cid:aging.png"' in html
    assert "base64" not in html


def test_xlsx_has_a_summary_sheet_and_one_sheet_per_check(report):
    workbook = load_workbook(io.BytesIO(report.xlsx_bytes()))

    assert workbook.sheetnames == ["summary", *CHECK_NAMES]
    mismatch = list(workbook["amount_mismatch"].iter_rows(values_only=True))
    header, row = mismatch[0], mismatch[1]
    assert row[header.index("reference_id")] == "REF-p01"
    assert row[header.index("payout_id")] == "p01"
    assert row[header.index("expected_amount")] == 1000


def test_findings_csv_writes_amounts_as_exact_decimals(report):
    rows = list(csv.DictReader(io.StringIO(report.findings_csv().decode())))

    assert (rows[0]["expected_amount"], rows[0]["actual_amount"]) == ("1000.00", "100.00")
    assert rows[0]["occurred_at"] == "2025-11-05 20:02:00"


def test_to_dict_has_counts_and_kes_as_strings(report):
    data = report.to_dict()

    assert data["findings"] == 3
    assert data["kes_at_risk"] == "1150.00"
    assert data["summary"][0] == {"check": "amount_mismatch", "count": 1, "kes_at_risk": "900.00"}
    assert data["exit_code"] == 1


def test_write_puts_every_file_in_the_directory(report, tmp_path):
    written = report.write(tmp_path / "out")

    assert sorted(path.name for path in written) == [
        "aging.png",
        "findings.csv",
        "findings_by_check.png",
        "kes_at_risk_by_check.png",
        "report.html",
        "report.json",
        "report.txt",
        "report.xlsx",
        "summary.csv",
    ]
    assert (tmp_path / "out" / "aging.png").read_bytes().startswith(b"\x89PNG")


# -- KES at risk: money checks are valued, the others counted ---------------------------------


@pytest.fixture
def with_failures() -> Report:
    """Two payouts that failed for good (no money moved) and one stale pending payout."""
    frames = Frames.from_records(
        payouts=[
            new_payout("p01", "1000.00", "failed", ocid="OC1", hour=20),
            new_payout("p02", "5000.00", "failed", ocid="OC2", hour=20),
            legacy_payout("p05", "250.00", "pending", reference="R5", hour=2),
        ],
        results=[
            new_result("r1", ocid="OC1", code=2001, hour=20),
            new_result("r2", ocid="OC2", code=2001, hour=20),
        ],
    )
    return Report(findings=run_checks(frames, OPTIONS), options=OPTIONS)


def test_checks_that_move_no_money_are_shown_by_count_only(with_failures):
    summary = with_failures.summary.set_index("check")

    assert summary.loc["failed_result", "count"] == 2
    assert summary.loc["failed_result", "kes_at_risk"] is None
    assert summary.loc["stale_pending", "kes_at_risk"] == Decimal("250.00")
    assert re.search(r"^failed_result +2 +count only$", with_failures.render(), re.M)
    assert "<td>failed_result</td>" in with_failures.to_html()
    assert re.search(r"<td>failed_result</td>.*?count only</td>", with_failures.to_html())
    rows = {
        row["check"]: row
        for row in csv.DictReader(io.StringIO(with_failures.summary_csv().decode()))
    }
    assert (rows["failed_result"]["count"], rows["failed_result"]["kes_at_risk"]) == ("2", "")
    assert with_failures.to_dict()["summary"][2]["kes_at_risk"] is None


def test_the_headline_separates_money_at_risk_from_findings_that_move_none(with_failures):
    assert with_failures.headline == (
        "3 findings: 1 with KES 250.00 at risk; 2 that move no money (failed_result 2)."
    )


def test_aging_counts_only_open_items(with_failures):
    aging = with_failures.aging.set_index("bucket")

    assert aging["count"].sum() == 1
    assert (aging.loc["4-24 h", "count"], aging.loc["4-24 h", "kes_at_risk"]) == (
        1,
        Decimal("250.00"),
    )


def test_the_docs_list_what_each_check_puts_at_risk_as_the_code_does():
    text = (Path(__file__).resolve().parent.parent / "docs" / "recon.md").read_text()
    documented = dict(re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", text, re.M))

    assert {name: documented[name] for name in CHECK_NAMES} == {
        name: AT_RISK[name] or "none (count only)" for name in CHECK_NAMES
    }
