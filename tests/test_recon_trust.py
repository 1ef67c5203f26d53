"""Recon says "clean" only about what it checked: each case a finance team built by hand (a
migrated database, a statement CSV) that came out clean while money was wrong, or raised a false
alarm, reconciled end to end through build_report on SQLite and MariaDB."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

import service
from recon.api import build_report
from recon.cli import main
from tests.recon_support import (
    AS_OF,
    CHARGE_REASON,
    PAYOUT_REASON,
    at,
    attempt,
    balanced_statement,
    nairobi,
    new_payout,
    new_result,
    seed,
    write_statement,
)

COLLECTION_REASON = "Pay Utility"


def reconcile(database_url, statement=None, *, since=None, until=None):
    return build_report(
        database_url, since=since, until=until, as_of=AS_OF, statement_path=statement
    )


def found(report) -> list[tuple[str, str]]:
    frame = report.findings.frame
    return sorted(zip(frame["check"], frame["subject"], strict=True))


def risk(report) -> Decimal:
    return report.total_at_risk


def statement_file(tmp_path, movements, *, start=None, end=None, header=True, newest_first=False):
    """A balanced statement of `movements` (receipt, Nairobi time, paid in, withdrawn, reason);
    its Time Period the Nairobi day of 2025-11-05 unless `start`/`end` say otherwise."""
    rows, block = balanced_statement(movements, header=header)
    if block and (start or end):
        block[3] = ["Time Period:", f"From {start}", "To", end]
    if newest_first:
        rows.reverse()
    return write_statement(tmp_path / "statement.csv", rows, block)


def payout_line(receipt, hour, amount="1000.00", reason=PAYOUT_REASON):
    return (receipt, nairobi(at(hour, 1)), None, amount, reason)


def collection(id, receipt, amount, *, created, completed=None, paid=None) -> dict:
    return {
        "id": id,
        "amount": Decimal(amount),
        "paid_amount": Decimal(paid or amount),
        "method": "mpesa",
        "status": "completed",
        "mpesa_receipt": receipt,
        "checkout_request_id": f"ws_CO_{id}",
        "result_code": "0",
        "phone_number": "254733000001",
        "created_at": created,
        "completed_at": completed or created,
    }


def paid_payout(engine, id, receipt, hour, amount="1000.00"):
    ocid = f"OC-{id}"
    seed(
        engine,
        payouts=[new_payout(id, amount, "completed", ocid=ocid, txn=receipt, hour=hour)],
        results=[new_result(f"r-{id}", ocid=ocid, code=0, amount=amount, txn=receipt, hour=hour)],
    )


def test_one_paid_payout_on_its_statement_is_clean(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)

    report = reconcile(database_url, statement_file(tmp_path, [payout_line("TK1", 8)]))

    assert found(report) == []
    assert report.exit_code == 0


# -- 1. a payout paid by two attempts ---------------------------------------------------------


def test_a_payout_paid_by_two_attempts_is_paid_twice(engine, database_url, tmp_path):
    seed(
        engine,
        payouts=[new_payout("p01", "1000.00", "completed", ocid="OC2", txn="TK1")],
        attempts=[attempt("p01", "OC1"), attempt("p01", "OC2", number=2)],
        results=[
            new_result("r1", ocid="OC1", code=0, amount="1000.00", txn="TK1"),
            new_result("r2", ocid="OC2", code=0, amount="1000.00", txn="TK2"),
        ],
    )
    lines = [payout_line("TK1", 8), payout_line("TK2", 9)]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == [("paid_twice", "payout REF-p01")]
    assert risk(report) == Decimal("1000.00")


def test_a_status_answer_with_a_second_receipt_is_paid_twice(engine, database_url, tmp_path):
    status_answer = new_result("q1", ocid="OC-QUERY", code=0, amount="1000.00", kind="status")
    seed(
        engine,
        payouts=[new_payout("p01", "1000.00", "completed", ocid="OC1", txn="TK1")],
        attempts=[attempt("p01", "OC1"), {**attempt("p01", "OC2", number=2), "receipt": "TK2"}],
        results=[
            new_result("r1", ocid="OC1", code=0, amount="1000.00", txn="TK1"),
            {**status_answer, "payout_id": "p01"},
        ],
    )
    lines = [payout_line("TK1", 8), payout_line("TK2", 9)]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == [("paid_twice", "payout REF-p01")]


def test_a_status_answer_row_carrying_a_receipt_counts_as_evidence(engine, database_url, tmp_path):
    answer = new_result("q1", ocid="OC-Q", code=0, amount="1000.00", txn="TK2", kind="status")
    seed(
        engine,
        payouts=[new_payout("p01", "1000.00", "completed", ocid="OC1", txn="TK1")],
        results=[
            new_result("r1", ocid="OC1", code=0, amount="1000.00", txn="TK1"),
            {**answer, "payout_id": "p01"},
        ],
    )
    lines = [payout_line("TK1", 8), payout_line("TK2", 9)]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == [("paid_twice", "payout REF-p01")]


# -- 2. a statement that does not cover the period ------------------------------------------------


def test_a_statement_covering_3_of_7_days_asked_for_is_not_clean(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    statement = statement_file(
        tmp_path, [payout_line("TK1", 8)], start="03-11-2025 00:00:00", end="05-11-2025 23:59:59"
    )

    report = reconcile(
        database_url, statement, since=datetime(2025, 10, 31, 21), until=datetime(2025, 11, 7, 21)
    )

    assert found(report) == [("statement_coverage", "statement")]
    assert report.findings.frame["reason"].iloc[0] == (
        "statement coverage: expected 2025-10-31 21:00:00 UTC to 2025-11-07 21:00:00 UTC covered"
        " != not covered: 2025-10-31 21:00:00 UTC to 2025-11-02 21:00:00 UTC;"
        " 2025-11-05 21:00:00 UTC to 2025-11-07 21:00:00 UTC (not checked)"
    )
    assert report.exit_code == 1


def test_last_weeks_statement_for_this_week_is_not_clean(engine, database_url, tmp_path):
    statement = statement_file(tmp_path, [], start="27-10-2025 00:00:00", end="02-11-2025 23:59:59")

    report = reconcile(
        database_url, statement, since=datetime(2025, 11, 2, 21), until=datetime(2025, 11, 9, 21)
    )

    assert [check for check, _ in found(report)] == ["statement_coverage"]


def test_a_headerless_statement_cut_short_is_not_clean(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    paid_payout(engine, "p02", "TK2", 15)
    statement = statement_file(tmp_path, [payout_line("TK1", 8)], header=False)

    report = reconcile(database_url, statement)

    assert ("statement_coverage", "statement") in found(report)
    assert report.exit_code == 1
    assert any("Time Period" in line for line in report.findings.scope)


def test_cli_days_are_nairobi_days_so_the_first_nairobi_hour_is_checked(
    engine, database_url, tmp_path
):
    # 01:00 Nairobi on 5 November is 22:00 UTC on the 4th: an unrecorded payout then.
    statement = write_statement(
        tmp_path / "statement.csv",
        *balanced_statement([("TKX", "05-11-2025 01:00:00", None, "700.00", PAYOUT_REASON)]),
    )
    out = tmp_path / "out"
    args = ["--database-url", database_url, "--statement", str(statement), "--out", str(out)]

    status = main(
        [*args, "--since", "2025-11-05", "--until", "2025-11-06", "--as-of", "2025-11-06"]
    )

    assert status == 1
    findings = (out / "findings.csv").read_text()
    assert "unrecorded_statement_entry" in findings and "TKX" in findings
    assert "statement_coverage" not in findings


def test_utc_days_against_a_statement_of_nairobi_days_say_what_was_not_covered(
    engine, database_url, tmp_path
):
    statement = statement_file(tmp_path, [])

    report = reconcile(
        database_url, statement, since=datetime(2025, 11, 5), until=datetime(2025, 11, 6)
    )

    assert found(report) == [("statement_coverage", "statement")]
    assert (
        "not covered: 2025-11-05 21:00:00 UTC to 2025-11-06 00:00:00 UTC"
        in (report.findings.frame["reason"].iloc[0])
    )


def test_the_report_states_the_period_the_coverage_and_what_was_not_checked(
    engine, database_url, tmp_path
):
    with_statement = reconcile(database_url, statement_file(tmp_path, []))
    without = reconcile(database_url, since=datetime(2025, 11, 4, 21), until=at(21))

    text = with_statement.render()
    assert "Period 2025-11-04 21:00:00 to 2025-11-05 21:00:00 UTC" in text
    assert "Time Period 2025-11-04 21:00:00 UTC to 2025-11-05 20:59:59 UTC" in text
    assert "The statement covers the whole period." in text
    assert "No statement given: missing_from_statement" in without.render()
    assert with_statement.to_dict()["scope"] == with_statement.findings.scope


def day_statement(tmp_path, name, day, movements):
    """A balanced statement of the Nairobi day `day` (a date in November 2025)."""
    rows, block = balanced_statement(movements)
    block[3] = [
        "Time Period:",
        f"From {day:02d}-11-2025 00:00:00",
        "To",
        f"{day:02d}-11-2025 23:59:59",
    ]
    return write_statement(tmp_path / name, rows, block)


def test_two_statements_of_consecutive_days_cover_both(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    paid_payout(engine, "p02", "TK2", 15)  # 18:01 Nairobi on the 5th
    first = day_statement(tmp_path, "a.csv", 4, [])
    second = day_statement(tmp_path, "b.csv", 5, [payout_line("TK1", 8)])

    report = reconcile(database_url, [first, second])

    assert found(report) == [("missing_from_statement", "payout REF-p02")]
    assert "The statement covers the whole period." in report.render()
    assert report.options.since == datetime(2025, 11, 3, 21)


def test_a_day_no_statement_covers_is_a_coverage_finding(engine, database_url, tmp_path):
    first = day_statement(tmp_path, "a.csv", 3, [])
    third = day_statement(
        tmp_path, "c.csv", 5, [("TKX", nairobi(at(9)), None, "5.00", PAYOUT_REASON)]
    )

    report = reconcile(database_url, [first, third])

    assert found(report) == [
        ("statement_coverage", "statement"),
        ("unrecorded_statement_entry", "statement c.csv line 8"),
    ]
    coverage = report.findings.of("statement_coverage")["reason"].iloc[0]
    assert "not covered: 2025-11-03 21:00:00 UTC to 2025-11-04 21:00:00 UTC" in coverage


def test_overlapping_statements_are_refused_naming_both(database_url, tmp_path, capsys):
    first = day_statement(tmp_path, "a.csv", 5, [])
    again = day_statement(tmp_path, "b.csv", 5, [])
    args = ["--database-url", database_url, "--statement", str(first), "--statement", str(again)]

    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "a.csv" in error and "b.csv" in error and "overlap" in error


# -- 3. legacy amounts recon could not read ------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path):
    """A migrated SQLite database: only SQLite keeps text in a DECIMAL column, as the old system
    left it (MariaDB refuses such a value at insert)."""
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    engine = service.make_engine(url)
    service.migrate(engine)
    engine.dispose()
    return url


def legacy_amount_rows(url, amount: str) -> None:
    """A payout whose amount is the text `amount`, and its result for 1,200.00, written with
    plain SQL as the old system did."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO b2c_payments (id, amount, status, reference_id, transaction_id,"
                " initiated_at, completed_at) VALUES ('p01', :amount, 'completed', 'REF1', 'TK1',"
                " '2025-11-05 08:00:00', '2025-11-05 08:01:00')"
            ),
            {"amount": amount},
        )
        connection.execute(
            sa.text(
                "INSERT INTO b2c_payment_callbacks (id, reference_id, result_code, transaction_id,"
                " transaction_amount, received_at) VALUES ('r1', 'REF1', 0, 'TK1', 1200.00,"
                " '2025-11-05 08:02:00')"
            )
        )
    engine.dispose()


@pytest.mark.parametrize("written", ["KSh 1,000.00", "1 000.00", "kes 1000"])
def test_legacy_amounts_are_read_and_compared(sqlite_url, tmp_path, written):
    legacy_amount_rows(sqlite_url, written)

    report = reconcile(sqlite_url, statement_file(tmp_path, [payout_line("TK1", 8, "1200.00")]))

    assert found(report) == [("amount_mismatch", "payout REF1")]
    assert risk(report) == Decimal("200.00")


def test_an_amount_recon_cannot_read_is_a_finding_not_a_skip(sqlite_url, tmp_path):
    legacy_amount_rows(sqlite_url, "about a thousand")

    report = reconcile(sqlite_url, statement_file(tmp_path, [payout_line("TK1", 8, "1200.00")]))

    assert found(report) == [("unreadable_value", "payout REF1")]
    assert "'about a thousand'" in report.findings.frame["reason"].iloc[0]


# -- 4. reversals -------------------------------------------------------------------------------


def test_a_paid_in_reversal_with_the_payouts_receipt_is_a_reversal(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    lines = [payout_line("TK1", 8), ("TK1", nairobi(at(10)), "1000.00", None, "Reversal")]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == [("reversal", "payout REF-p01")]
    assert risk(report) == Decimal("1000.00")


def test_a_collection_cancelled_by_a_withdrawn_row_is_a_reversal(engine, database_url, tmp_path):
    seed(engine, payments=[collection("s01", "TKS1", "500.00", created=at(9))])
    lines = [
        ("TKS1", nairobi(at(9)), "500.00", None, COLLECTION_REASON),
        ("TKS1", nairobi(at(11)), None, "500.00", COLLECTION_REASON),
    ]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == [("reversal", "payment ws_CO_s01")]


def test_a_reversal_linked_by_its_new_receipt_is_a_reversal_of_the_payout(
    engine, database_url, tmp_path
):
    paid_payout(engine, "p01", "TK1", 8)
    rows, block = balanced_statement(
        [payout_line("TK1", 8), ("TKREV", nairobi(at(10)), "1000.00", None, "Reversal")]
    )
    rows[1]["Linked Transaction ID"] = "TK1"

    report = reconcile(database_url, write_statement(tmp_path / "s.csv", rows, block))

    assert found(report) == [("reversal", "payout REF-p01")]
    assert report.findings.frame["transaction_id"].iloc[0] == "TK1"


# -- 5. duplicate receipts -----------------------------------------------------------------------


def test_one_receipt_on_two_completed_payouts_is_a_duplicate(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    seed(engine, payouts=[new_payout("p02", "400.00", "completed", txn="TK1", hour=9)])

    report = reconcile(database_url, statement_file(tmp_path, [payout_line("TK1", 8)]))

    assert found(report) == [("duplicate_receipt", "payout REF-p02")]
    assert risk(report) == Decimal("400.00")


def test_one_receipt_withdrawn_twice_is_a_duplicate(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    lines = [payout_line("TK1", 8), payout_line("TK1", 9)]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == [("duplicate_receipt", "statement line 9")]
    assert risk(report) == Decimal("1000.00")


# -- 6. period boundaries -----------------------------------------------------------------------


def test_a_collection_paid_just_after_midnight_belongs_to_the_day_it_was_paid(
    engine, database_url, tmp_path
):
    created = datetime(2025, 11, 4, 20, 59, 50)  # 23:59:50 Nairobi on the 4th
    paid = datetime(2025, 11, 4, 21, 0, 20)  # 00:00:20 Nairobi on the 5th
    seed(engine, payments=[collection("s01", "TKS1", "500.00", created=created, completed=paid)])
    lines = [("TKS1", nairobi(paid), "500.00", None, COLLECTION_REASON)]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == []


def test_a_payout_started_before_the_period_and_paid_inside_it_is_checked(
    engine, database_url, tmp_path
):
    payout = new_payout("p01", "1000.00", "completed", ocid="OC1", txn="TK1")
    seed(engine, payouts=[{**payout, "initiated_at": datetime(2025, 11, 4, 20, 59)}])

    report = reconcile(database_url, statement_file(tmp_path, []))

    assert found(report) == [("missing_from_statement", "payout REF-p01")]


def test_a_date_only_time_period_keeps_its_last_day(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 15)
    statement = statement_file(tmp_path, [], start="05-11-2025", end="05-11-2025")

    report = reconcile(database_url, statement)

    assert found(report) == [("missing_from_statement", "payout REF-p01")]


# -- 7. fees are classified by reason type, not by a substring ------------------------------------


def test_a_collection_whose_details_say_recharge_is_not_a_fee(engine, database_url, tmp_path):
    seed(engine, payments=[collection("s01", "TKS1", "50.00", created=at(9))])
    rows, block = balanced_statement(
        [
            ("TKS1", nairobi(at(9)), "50.00", None, COLLECTION_REASON),
            ("TKS2", nairobi(at(10)), "9000.00", None, COLLECTION_REASON),
        ]
    )
    for row in rows:
        row["Reason Type"], row["Details"] = "", "Airtime RECHARGE for 0722000000"

    report = reconcile(database_url, write_statement(tmp_path / "s.csv", rows, block))

    assert found(report) == [("unrecorded_statement_entry", "statement line 9")]
    assert risk(report) == Decimal("9000.00")


def test_salary_payment_withdrawal_charge_paid_is_a_payout(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    lines = [payout_line("TK1", 8, reason="Salary payment withdrawal charge paid")]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == []


def test_a_charge_row_sharing_the_payouts_receipt_is_a_charge(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    lines = [payout_line("TK1", 8), payout_line("TK1", 8, "5.00", reason=CHARGE_REASON)]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == []


# -- 8. ordering, receipt spelling and status words -----------------------------------------------


def test_newest_first_rows_sharing_one_time_give_no_balance_break(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    paid_payout(engine, "p02", "TK2", 8, amount="300.00")
    lines = [payout_line("TK1", 8), payout_line("TK2", 8, "300.00")]

    report = reconcile(database_url, statement_file(tmp_path, lines, newest_first=True))

    assert found(report) == []


def test_receipts_differing_in_case_or_spacing_match(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "tk1 ab", 8)

    report = reconcile(database_url, statement_file(tmp_path, [payout_line(" TK1AB", 8)]))

    assert found(report) == []


def test_a_success_status_word_is_completed(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    rows, block = balanced_statement([payout_line("TK1", 8)])
    rows[0]["Transaction Status"] = "Success"

    report = reconcile(database_url, write_statement(tmp_path / "s.csv", rows, block))

    assert found(report) == []


# -- 9. money at risk counted once ---------------------------------------------------------------


def test_a_redelivered_callback_puts_no_money_at_risk(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    redelivery = new_result("r2", ocid="OC-p01", code=0, amount="1000.00", txn=None, hour=8)
    seed(engine, results=[redelivery])

    report = reconcile(database_url, statement_file(tmp_path, [payout_line("TK1", 8)]))

    assert found(report) == [("duplicate_callback", "payout REF-p01")]
    assert risk(report) == Decimal("0.00")


def test_a_short_payment_is_counted_once(engine, database_url, tmp_path):
    seed(
        engine,
        payouts=[new_payout("p01", "1000.00", "completed", ocid="OC1", txn="TK1")],
        results=[new_result("r1", ocid="OC1", code=0, amount="900.00", txn="TK1")],
    )

    report = reconcile(database_url, statement_file(tmp_path, [payout_line("TK1", 8, "900.00")]))

    assert found(report) == [("amount_mismatch", "payout REF-p01")]
    assert risk(report) == Decimal("100.00")


def test_one_deleted_statement_row_is_counted_once(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    paid_payout(engine, "p02", "TK2", 9, amount="300.00")
    rows, block = balanced_statement([payout_line("TK1", 8), payout_line("TK2", 9, "300.00")])
    del rows[0]

    report = reconcile(database_url, write_statement(tmp_path / "s.csv", rows, block))

    checks = [check for check, _ in found(report)]
    assert "missing_from_statement" in checks and "statement_integrity" in checks
    assert risk(report) == Decimal("1000.00")


def test_a_failed_payout_puts_no_money_at_risk(engine, database_url):
    seed(
        engine,
        payouts=[new_payout("p01", "1000.00", "failed", ocid="OC1")],
        results=[new_result("r1", ocid="OC1", code=2001)],
    )

    report = reconcile(database_url, since=datetime(2025, 11, 4, 21), until=at(21))

    assert found(report) == [("failed_result", "payout REF-p01")]
    assert risk(report) == Decimal("0.00")
