"""The org-portal statement parser: every layout variant, and broken statements."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest
from openpyxl import Workbook

from recon.statement import (
    ROLE_CHARGE,
    ROLE_NOT_MOVED,
    ROLE_PAYMENT,
    ROLE_REVERSAL,
    ROLE_TRANSFER,
    StatementError,
    parse_statement,
)
from tests.recon_support import (
    CHARGE_REASON,
    PAYOUT_REASON,
    PORTAL_HEADER,
    balanced_statement,
    entry,
    header_block,
    write_statement,
)

UTC_11_31 = pd.Timestamp("2025-11-05 11:31:07")  # 14:31:07 in Nairobi


def parse_rows(tmp_path, rows, header=None):
    return parse_statement(write_statement(tmp_path / "statement.csv", rows, header))


def write_xlsx(path, rows: list[list]):
    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def xlsx_row(receipt, when, paid_in, withdrawn, balance, reason=PAYOUT_REASON):
    return [
        receipt,
        when,
        when,
        reason,
        "Completed",
        paid_in,
        withdrawn,
        balance,
        "true",
        reason,
        "",
        "",
        "",
    ]


# -- CSV --------------------------------------------------------------------------------------


def test_csv_with_header_block_reads_header_and_entries(tmp_path):
    rows, header = balanced_statement(
        [("TK1", "05-11-2025 14:31:07", None, "500.00", PAYOUT_REASON)]
    )

    statement = parse_rows(tmp_path, rows, header)

    assert statement.header.short_code == "600996"
    assert statement.header.opening_cents == 10_000_000
    assert statement.header.closing_cents == 9_950_000
    assert statement.header.period_start == pd.Timestamp("2025-11-04 21:00:00")
    assert statement.header.period_end == pd.Timestamp("2025-11-05 20:59:59")
    assert list(statement.entries["receipt"]) == ["TK1"]
    assert statement.entries["line"].tolist() == [8]
    assert statement.problems == []


def test_csv_without_header_block(tmp_path):
    statement = parse_rows(tmp_path, [entry("TK1", "05-11-2025 14:31:07", withdrawn="500.00")])

    assert statement.header.opening_cents is None
    assert list(statement.entries["withdrawn_cents"]) == [50_000]
    assert statement.period == (UTC_11_31, UTC_11_31)
    assert statement.problems == []


@pytest.mark.parametrize(
    "written",
    [
        "05-11-2025 14:31:07",
        "05/11/2025 14:31:07",
        "2025-11-05 14:31:07",
        "2025-11-05T14:31:07",
        "45966.60494212963",
    ],
    ids=["dd-mm-yyyy", "dd/mm/yyyy", "iso", "iso-t", "excel serial"],
)
def test_each_date_format_is_read_as_nairobi_time(tmp_path, written):
    statement = parse_rows(tmp_path, [entry("TK1", written, withdrawn="1.00")])

    assert statement.entries["completed_at"].iloc[0] == UTC_11_31


@pytest.mark.parametrize(
    "written, cents",
    [
        ("1,234,567.50", 123_456_750),
        ("1234567.5", 123_456_750),
        ("-300.00", 30_000),
        ("300.00", 30_000),
        ("KES 20.00", 2_000),
        ("0.10", 10),
    ],
)
def test_withdrawn_amounts_any_sign_and_separators(tmp_path, written, cents):
    statement = parse_rows(tmp_path, [entry("TK1", "05-11-2025 14:31:07", withdrawn=written)])

    assert statement.entries["withdrawn_cents"].iloc[0] == cents


def test_duplicate_receipts_from_charge_rows_are_kept_and_marked(tmp_path):
    statement = parse_rows(
        tmp_path,
        [
            entry("TK1", "05-11-2025 14:31:07", withdrawn="-500.00"),
            entry("TK1", "05-11-2025 14:31:07", withdrawn="-15.00", reason=CHARGE_REASON),
        ],
    )

    assert list(statement.entries["receipt"]) == ["TK1", "TK1"]
    assert list(statement.entries["role"]) == [ROLE_PAYMENT, ROLE_CHARGE]


def test_newest_first_statements_have_no_balance_breaks(tmp_path):
    rows, header = balanced_statement(
        [
            ("TK1", "05-11-2025 09:00:00", None, "100.00", PAYOUT_REASON),
            ("TK2", "05-11-2025 10:00:00", "50.00", None, "Pay Utility"),
            ("TK3", "05-11-2025 11:00:00", None, "20.00", PAYOUT_REASON),
        ]
    )

    statement = parse_rows(tmp_path, rows[::-1], header)

    assert statement.problems == []


@pytest.mark.parametrize(
    "times",
    [
        ["05-11-2025 10:00:00"] * 3,
        [
            "05-11-2025 11:00:00",
            "05-11-2025 09:00:00",
            "05-11-2025 10:00:00",
            "05-11-2025 11:00:00",
        ],
    ],
    ids=["all in one second", "first and last rows share a time"],
)
def test_newest_first_statements_with_tied_end_times_have_no_balance_breaks(tmp_path, times):
    movements = [
        (f"TK{number}", when, None, f"{number}0.00", PAYOUT_REASON)
        for number, when in enumerate(times, start=1)
    ]
    rows, header = balanced_statement(movements)

    statement = parse_rows(tmp_path, rows[::-1], header)

    assert statement.problems == []


def test_oldest_first_statements_in_one_second_stay_as_listed(tmp_path):
    movements = [
        (f"TK{number}", "05-11-2025 10:00:00", None, f"{number}0.00", PAYOUT_REASON)
        for number in (1, 2, 3)
    ]
    rows, header = balanced_statement(movements)

    statement = parse_rows(tmp_path, rows, header)

    assert statement.problems == []


def test_a_date_only_period_ends_with_its_last_nairobi_day(tmp_path):
    rows, _ = balanced_statement([("TK1", "07-11-2025 22:00:00", None, "1.00", PAYOUT_REASON)])
    header = header_block(
        opening="100,000.00",
        closing="99,999.00",
        paid_in="0.00",
        withdrawn="1.00",
        start="01-11-2025",
        end="07-11-2025",
    )

    statement = parse_rows(tmp_path, rows, header)

    assert statement.header.period_start == pd.Timestamp("2025-10-31 21:00:00")
    assert statement.header.period_end == pd.Timestamp("2025-11-07 20:59:59")
    assert statement.problems == []


def test_rows_span_is_the_entries_first_and_last_time_whatever_the_header_says(tmp_path):
    rows, header = balanced_statement(
        [
            ("TK1", "05-11-2025 16:00:00", None, "1.00", PAYOUT_REASON),
            ("TK2", "05-11-2025 14:31:07", None, "1.00", PAYOUT_REASON),
        ]
    )

    statement = parse_rows(tmp_path, rows, header)

    assert statement.rows_span == (UTC_11_31, pd.Timestamp("2025-11-05 13:00:00"))
    assert statement.period == (
        pd.Timestamp("2025-11-04 21:00:00"),
        pd.Timestamp("2025-11-05 20:59:59"),
    )


def test_rows_span_of_a_statement_without_entries_is_empty(tmp_path):
    statement = parse_rows(tmp_path, [])

    assert statement.rows_span == (None, None)


@pytest.mark.parametrize(
    "written, receipts",
    [
        ([" tk5ay9 dlmg ", "tk6 b"], ["TK5AY9DLMG", "TK6B"]),
        ([" tk5ay9 dlmg "] * 3, ["TK5AY9DLMG"] * 3),
    ],
    ids=["distinct receipts", "repeated receipts"],
)
def test_receipts_are_upper_cased_without_whitespace(tmp_path, written, receipts):
    rows = [entry(receipt, "05-11-2025 14:31:07", withdrawn="1.00") for receipt in written]
    rows[0]["Linked Transaction ID"] = "tk5ay9\tdlmg"

    entries = parse_rows(tmp_path, rows).entries

    assert entries["receipt"].tolist() == receipts
    assert entries["linked_transaction_id"].iloc[0] == "TK5AY9DLMG"
    assert entries["linked_transaction_id"].iloc[1:].isna().all()


# -- row roles --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, reason, details, paid_in, withdrawn, role",
    [
        ("Completed", PAYOUT_REASON, "", "", "-500.00", ROLE_PAYMENT),
        ("Completed", "Pay Utility", "", "500.00", "", ROLE_PAYMENT),
        ("Completed", "Pay Bill Charge", "", "", "-15.00", ROLE_CHARGE),
        ("Completed", "Withdrawal Charge", "", "", "-15.00", ROLE_CHARGE),
        ("Completed", "Customer Transfer of Funds Charge", "", "", "-15.00", ROLE_CHARGE),
        ("Completed", "Business Payment Charge", "", "", "-15.00", ROLE_CHARGE),
        ("Completed", "pay  bill   CHARGES ", "", "", "-15.00", ROLE_CHARGE),
        ("Completed", "Pay Bill Charge", "", "15.00", "", ROLE_PAYMENT),
        ("Completed", "", "Pay Bill Charge", "", "-15.00", ROLE_CHARGE),
        ("Completed", "", "Airtime RECHARGE for 0722000000", "", "-50.00", ROLE_PAYMENT),
        ("Completed", "Salary payment withdrawal charge paid", "", "", "-500.00", ROLE_PAYMENT),
        (
            "Completed",
            "Business Payment to Customer Withdrawal Charge Paid",
            "",
            "",
            "-500.00",
            ROLE_PAYMENT,
        ),
        ("Completed", PAYOUT_REASON, "Pay Bill Charge", "", "-15.00", ROLE_PAYMENT),
        (
            "Completed",
            "Utility Account to Organization Settlement Account",
            "",
            "",
            "-9,000.00",
            ROLE_TRANSFER,
        ),
        (
            "Completed",
            "Funding",
            "Funds transfer from the settlement account",
            "9.00",
            "",
            ROLE_TRANSFER,
        ),
        ("Completed", "Reversal", "", "500.00", "", ROLE_REVERSAL),
        ("Completed", "", "Reversal of TK123ABC", "500.00", "", ROLE_REVERSAL),
        ("Completed", "Reversal of Pay Bill Charge", "", "", "-15.00", ROLE_REVERSAL),
        ("Failed", PAYOUT_REASON, "", "", "-500.00", ROLE_NOT_MOVED),
        (" DECLINED ", "Pay Utility", "", "500.00", "", ROLE_NOT_MOVED),
        ("cancelled", PAYOUT_REASON, "", "", "-500.00", ROLE_NOT_MOVED),
        ("Canceled", PAYOUT_REASON, "", "", "-500.00", ROLE_NOT_MOVED),
        ("Expired", "Reversal", "", "500.00", "", ROLE_NOT_MOVED),
        ("failed", "Pay Bill Charge", "", "", "-15.00", ROLE_NOT_MOVED),
    ],
    ids=[
        "payout",
        "collection",
        "pay bill charge",
        "withdrawal charge",
        "transfer of funds charge",
        "business payment charge",
        "charges in any case and spacing",
        "charge words on a paid-in row",
        "charge in details when reason type is blank",
        "airtime recharge",
        "salary withdrawal charge paid is a payout",
        "b2c withdrawal charge paid is a payout",
        "details ignored when reason type is given",
        "settlement sweep",
        "funds transfer in details",
        "reversal",
        "reversal in details",
        "reversal before charge",
        "failed",
        "declined",
        "cancelled",
        "canceled",
        "expired before reversal",
        "failed before charge",
    ],
)
def test_each_row_gets_one_role(tmp_path, status, reason, details, paid_in, withdrawn, role):
    row = entry(
        "TK1",
        "05-11-2025 14:31:07",
        paid_in=paid_in,
        withdrawn=withdrawn,
        reason=reason,
        details=details,
        status=status,
    )

    statement = parse_rows(tmp_path, [row])

    assert statement.entries["role"].tolist() == [role]


@pytest.mark.parametrize(
    "linked, role",
    [("TK9OTHER", ROLE_REVERSAL), (" tk1 ", ROLE_PAYMENT), ("", ROLE_PAYMENT)],
    ids=["another receipt", "its own receipt", "blank"],
)
def test_a_linked_transaction_id_other_than_the_receipt_marks_a_reversal(tmp_path, linked, role):
    row = entry("TK1", "05-11-2025 14:31:07", paid_in="500.00", reason="Pay Utility")
    row["Linked Transaction ID"] = linked

    statement = parse_rows(tmp_path, [row])

    assert statement.entries["role"].tolist() == [role]


@pytest.mark.parametrize("status", ["Completed", "COMPLETED", "success", "Successful", ""])
def test_completed_statuses_are_not_problems(tmp_path, status):
    row = entry("TK1", "05-11-2025 14:31:07", withdrawn="1.00", status=status)

    assert parse_rows(tmp_path, [row]).problems == []


def test_an_unknown_status_is_an_unreadable_value_and_the_row_is_kept(tmp_path):
    row = entry("TK1", "05-11-2025 14:31:07", withdrawn="1.00", status="Pending")

    statement = parse_rows(tmp_path, [row])

    assert [(problem.kind, problem.line, problem.reason) for problem in statement.problems] == [
        (
            "unreadable_value",
            2,
            "statement integrity: expected a readable Transaction Status != 'Pending' "
            "(unreadable, line 2)",
        )
    ]
    assert statement.entries["role"].tolist() == [ROLE_PAYMENT]


# -- XLSX -------------------------------------------------------------------------------------


def test_xlsx_with_header_block_datetime_cells_and_numbers(tmp_path):
    header = header_block(opening="1,000.00", closing="500.00", paid_in="0.00", withdrawn="500.00")
    path = write_xlsx(
        tmp_path / "statement.xlsx",
        [
            *header,
            PORTAL_HEADER,
            xlsx_row("TK1", datetime(2025, 11, 5, 14, 31, 7), None, -500, 500),
        ],
    )

    statement = parse_statement(path)

    assert statement.header.account_holder == "ACME PAYOUTS LTD"
    assert statement.entries["completed_at"].iloc[0] == UTC_11_31
    assert statement.entries["withdrawn_cents"].iloc[0] == 50_000
    assert statement.problems == []


def test_xlsx_without_header_block_with_excel_serials_and_text_amounts(tmp_path):
    path = write_xlsx(
        tmp_path / "statement.xlsx",
        [
            PORTAL_HEADER,
            xlsx_row("TK1", 45966.60494212963, "1,000.00", None, "2,000.00", "Pay Utility"),
            xlsx_row("TK2", "05-11-2025 15:00:00", None, "250.50", "1,749.50"),
        ],
    )

    statement = parse_statement(path)

    assert statement.entries["completed_at"].iloc[0] == UTC_11_31
    assert list(statement.entries["paid_in_cents"].fillna(0)) == [100_000, 0]
    assert list(statement.entries["withdrawn_cents"].fillna(0)) == [0, 25_050]
    assert statement.problems == []


# -- broken statements ------------------------------------------------------------------------


def test_broken_running_balance_is_a_problem_not_an_exception(tmp_path):
    rows, header = balanced_statement(
        [
            ("TK1", "05-11-2025 09:00:00", None, "100.00", PAYOUT_REASON),
            ("TK2", "05-11-2025 10:00:00", None, "100.00", PAYOUT_REASON),
        ]
    )
    rows[1]["Balance"] = "99,700.00"  # should be 99,800.00

    statement = parse_rows(tmp_path, rows)

    assert [problem.reason for problem in statement.problems] == [
        "statement integrity: balance break at line 3: expected 99,800.00 != balance "
        "99,700.00 (100.00 short)"
    ]


def test_opening_plus_paid_in_minus_withdrawn_must_equal_closing(tmp_path):
    rows, header = balanced_statement([("TK1", "05-11-2025 09:00:00", None, "100.00", "x")])
    header[5][3] = "90,000.00"  # closing balance

    statement = parse_rows(tmp_path, rows, header)

    kinds = [problem.kind for problem in statement.problems]
    assert kinds == ["opening_closing"]
    assert statement.problems[0].reason == (
        "statement integrity: opening 100,000.00 + paid in 0.00 - withdrawn 100.00: expected "
        "closing 99,900.00 != closing 90,000.00 (9,900.00 short)"
    )


def test_totals_that_differ_from_the_header_are_problems(tmp_path):
    rows, header = balanced_statement([("TK1", "05-11-2025 09:00:00", "10.00", None, "x")])
    header[5][7] = "20.00"  # total paid in

    statement = parse_rows(tmp_path, rows, header)

    assert [problem.kind for problem in statement.problems] == ["total_paid_in"]


def test_unreadable_values_and_blank_receipts_are_problems(tmp_path):
    statement = parse_rows(
        tmp_path,
        [
            entry("TK1", "31-31-2025 99:00:00", withdrawn="1.00"),
            entry("TK2", "05-11-2025 09:00:00", withdrawn="one hundred"),
            entry("", "05-11-2025 09:00:00", withdrawn="5.00"),
        ],
    )

    assert sorted((problem.line, problem.kind) for problem in statement.problems) == [
        (2, "unreadable_value"),  # Completion Time
        (2, "unreadable_value"),  # Initiation Time
        (3, "unreadable_value"),  # Withdrawn
        (4, "missing_receipt"),
    ]
    assert "'one hundred'" in statement.problems[2].reason


def test_entries_outside_the_header_period_are_problems(tmp_path):
    rows, header = balanced_statement([("TK1", "07-11-2025 09:00:00", None, "1.00", "x")])

    statement = parse_rows(tmp_path, rows, header)

    assert [problem.kind for problem in statement.problems] == ["outside_period"]


def test_a_file_without_a_receipt_header_is_not_a_statement(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("name,amount\nalice,10\n")

    with pytest.raises(StatementError, match="Receipt No."):
        parse_statement(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(StatementError, match="gone.csv"):
        parse_statement(tmp_path / "gone.csv")


def test_a_corrupt_xlsx_is_named(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"not a zip file")

    with pytest.raises(StatementError, match="broken.xlsx"):
        parse_statement(path)
