"""B2C charges against the tariff (`charge_mismatch`): each payout row on the statement and its
charge rows, against the tariff in force on its Nairobi day, reconciled end to end through
build_report on SQLite and MariaDB. The shipped tariff charges 5.00 for 501-1,500 and knows
nothing of 150,001-250,000."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from recon.api import build_report
from recon.tariff import COLUMNS, TariffError
from tests.recon_support import (
    AS_OF,
    CHARGE_REASON,
    PAYOUT_REASON,
    at,
    balanced_statement,
    nairobi,
    new_payout,
    new_result,
    seed,
    write_statement,
)


def reconcile(database_url, statement, *, since=None, until=None, tariff=None):
    return build_report(
        database_url,
        since=since,
        until=until,
        as_of=AS_OF,
        statement_path=statement,
        tariff_path=tariff,
    )


def found(report) -> list[tuple[str, str, Decimal | None]]:
    frame = report.findings.frame
    return sorted(zip(frame["check"], frame["subject"], frame["at_risk"], strict=True))


def charges_found(report):
    return report.findings.of("charge_mismatch")


def statement_file(tmp_path, movements, *, start=None, end=None):
    rows, block = balanced_statement(movements)
    if start or end:
        block[3] = ["Time Period:", f"From {start}", "To", end]
    return write_statement(tmp_path / "statement.csv", rows, block)


def payout_line(receipt, when, amount="1000.00", reason=PAYOUT_REASON):
    return (receipt, nairobi(when), None, amount, reason)


def charge_line(receipt, when, amount="5.00"):
    return (receipt, nairobi(when), None, amount, CHARGE_REASON)


def collection(id, receipt, amount, when) -> dict:
    return {
        "id": id,
        "amount": Decimal(amount),
        "paid_amount": Decimal(amount),
        "method": "mpesa",
        "status": "completed",
        "mpesa_receipt": receipt,
        "checkout_request_id": f"ws_CO_{id}",
        "result_code": "0",
        "phone_number": "254733000001",
        "created_at": when,
        "completed_at": when,
    }


def paid_payout(engine, id, receipt, hour, amount="1000.00", *, completed=None):
    ocid = f"OC-{id}"
    payout = new_payout(id, amount, "completed", ocid=ocid, txn=receipt, hour=hour)
    result = new_result(f"r-{id}", ocid=ocid, code=0, amount=amount, txn=receipt, hour=hour)
    if completed is not None:
        payout |= {"initiated_at": completed, "completed_at": completed}
        result |= {"received_at": completed}
    seed(engine, payouts=[payout], results=[result])


def test_a_payout_charged_as_the_tariff_says_is_clean(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    lines = [payout_line("TK1", at(8, 1)), charge_line("TK1", at(8, 1))]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == []
    assert report.exit_code == 0


def test_a_charge_off_by_some_shillings_is_one_charge_mismatch(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    lines = [payout_line("TK1", at(8, 1)), charge_line("TK1", at(8, 1), "8.00")]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == [("charge_mismatch", "payout REF-p01", Decimal("3.00"))]
    (finding,) = charges_found(report).itertuples()
    assert (finding.expected_amount, finding.actual_amount) == (Decimal("5.00"), Decimal("8.00"))
    assert (finding.payout_id, finding.transaction_id) == ("p01", "TK1")
    assert finding.reason == (
        "charge mismatch: expected 5.00 (band 501-1,000, tariff from date unknown) != "
        "charged 8.00 (3.00 over)"
    )
    assert report.total_at_risk == Decimal("3.00")


def test_a_charge_row_whose_receipt_is_on_no_other_row_is_a_charge_of_no_payout(
    engine, database_url, tmp_path
):
    paid_payout(engine, "p01", "TK1", 8)
    lines = [
        payout_line("TK1", at(8, 1)),
        charge_line("TK1", at(8, 1)),
        charge_line("TK9", at(9, 1), "9.00"),
    ]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == [("charge_mismatch", "statement line 10", Decimal("9.00"))]
    (reason,) = charges_found(report)["reason"]
    assert reason == (
        "charge mismatch: expected a payment with receipt TK9 != none on the statement "
        "(9.00 charged for none)"
    )


def test_a_payout_without_the_charge_the_tariff_asks_is_a_charge_mismatch(
    engine, database_url, tmp_path
):
    paid_payout(engine, "p01", "TK1", 8)
    paid_payout(engine, "p02", "TK2", 9, "1500.00")
    lines = [
        payout_line("TK1", at(8, 1)),
        charge_line("TK1", at(8, 1)),
        payout_line("TK2", at(9, 1), "1500.00"),
    ]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == [("charge_mismatch", "payout REF-p02", Decimal("5.00"))]
    (reason,) = charges_found(report)["reason"]
    assert reason == (
        "charge mismatch: expected 5.00 (band 1,001-1,500, tariff from date unknown) != "
        "no charge row (5.00 short)"
    )


def test_a_payout_the_tariff_charges_nothing_needs_no_charge_row(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    paid_payout(engine, "p02", "TK2", 9, "100.00")
    lines = [
        payout_line("TK1", at(8, 1)),
        charge_line("TK1", at(8, 1)),
        payout_line("TK2", at(9, 1), "100.00"),
    ]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == []


def test_a_statement_without_charge_rows_says_charges_were_not_checked(
    engine, database_url, tmp_path
):
    paid_payout(engine, "p01", "TK1", 8)

    report = reconcile(database_url, statement_file(tmp_path, [payout_line("TK1", at(8, 1))]))

    assert found(report) == []
    assert report.findings.scope[-1] == (
        "The statement shows no B2C charge rows: charge_mismatch not checked (the charges may "
        "be on the charges account's statement)."
    )


def test_a_statement_whose_only_charges_are_collections_says_payout_charges_were_not_checked(
    engine, database_url, tmp_path
):
    paid_payout(engine, "p01", "TK1", 8)
    seed(engine, payments=[collection("s01", "TKS1", "500.00", at(9))])
    lines = [
        payout_line("TK1", at(8, 1)),
        ("TKS1", nairobi(at(9)), "500.00", None, "Pay Utility"),
        ("TKS1", nairobi(at(9)), None, "5.00", "Pay Bill Charge"),
    ]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == []
    assert report.findings.scope[-1].startswith("The statement shows no B2C charge rows")


def test_a_payout_in_a_band_the_tariff_does_not_know_is_not_checked_and_not_clean(
    engine, database_url, tmp_path
):
    paid_payout(engine, "p01", "TK1", 8)
    paid_payout(engine, "p02", "TK2", 9, "200000.00")
    lines = [
        payout_line("TK1", at(8, 1)),
        charge_line("TK1", at(8, 1)),
        payout_line("TK2", at(9, 1), "200000.00"),
        charge_line("TK2", at(9, 1), "12.00"),
    ]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == [("charge_mismatch", "payout REF-p02", None)]
    assert report.exit_code == 1
    (finding,) = charges_found(report).itertuples()
    assert finding.expected_amount is None and finding.actual_amount == Decimal("12.00")
    assert finding.reason == (
        "charge mismatch: expected a tariff charge for 200,000.00 on 2025-11-05 != unknown "
        "(band 150,001-250,000, tariff from date unknown; not checked, 12.00 charged)"
    )
    assert report.charges.iloc[-1]["not_checked"] == 1


def test_the_withdrawal_charges_paid_variant_is_charged_its_own_tariff(
    engine, database_url, tmp_path
):
    paid_payout(engine, "p01", "TK1", 8, "300.00")
    reason = "Business Payment to Customer Withdrawal Charge Paid"
    lines = [payout_line("TK1", at(8, 1), "300.00", reason), charge_line("TK1", at(8, 1), "34.00")]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    assert found(report) == []


CHANGING_TARIFF = "\n".join(
    [
        "# 1,000 cost 5.00 until 5 November 2025 (Nairobi), 7.00 from then on",
        ",".join(COLUMNS),
        ",1,1000,5,unknown,unknown,test",
        "2025-11-05,1,1000,7,unknown,unknown,test",
    ]
)


def test_payouts_either_side_of_a_tariff_change_are_charged_the_tariff_of_their_nairobi_day(
    engine, database_url, tmp_path
):
    """22:30 UTC on 4 November is 01:30 on 5 November in Nairobi: the new tariff's day."""
    tariff = tmp_path / "tariff.csv"
    tariff.write_text(CHANGING_TARIFF)
    before, after = datetime(2025, 11, 4, 20, 0), datetime(2025, 11, 4, 22, 30)
    paid_payout(engine, "p01", "TK1", 0, completed=before)
    paid_payout(engine, "p02", "TK2", 0, completed=after)
    lines = [
        payout_line("TK1", before),
        charge_line("TK1", before, "5.00"),
        payout_line("TK2", after),
        charge_line("TK2", after, "7.00"),
    ]
    statement = statement_file(
        tmp_path, lines, start="04-11-2025 00:00:00", end="05-11-2025 23:59:59"
    )
    since, until = datetime(2025, 11, 3, 21), datetime(2025, 11, 5, 21)

    report = reconcile(database_url, statement, since=since, until=until, tariff=tariff)

    assert found(report) == []
    assert list(report.charges["day"]) == ["2025-11-04", "2025-11-05", "total"]
    assert list(report.charges["expected"]) == [Decimal("5.00"), Decimal("7.00"), Decimal("12.00")]


def test_a_payout_charged_the_old_tariff_after_the_change_is_a_charge_mismatch(
    engine, database_url, tmp_path
):
    tariff = tmp_path / "tariff.csv"
    tariff.write_text(CHANGING_TARIFF)
    paid_payout(engine, "p01", "TK1", 8)
    lines = [payout_line("TK1", at(8, 1)), charge_line("TK1", at(8, 1), "5.00")]

    report = reconcile(database_url, statement_file(tmp_path, lines), tariff=tariff)

    assert found(report) == [("charge_mismatch", "payout REF-p01", Decimal("2.00"))]
    (reason,) = charges_found(report)["reason"]
    assert "(band 1-1,000, tariff from 2025-11-05) != charged 5.00 (2.00 short)" in reason


def test_the_report_shows_charges_per_day_against_the_tariff(engine, database_url, tmp_path):
    paid_payout(engine, "p01", "TK1", 8)
    paid_payout(engine, "p02", "TK2", 9, "2000.00")
    lines = [
        payout_line("TK1", at(8, 1)),
        charge_line("TK1", at(8, 1), "8.00"),
        payout_line("TK2", at(9, 1), "2000.00"),
        charge_line("TK2", at(9, 1), "9.00"),
    ]

    report = reconcile(database_url, statement_file(tmp_path, lines))

    text = report.render()
    assert (
        "Charges against the tariff (B2C payouts on the statement, per Nairobi day)\n"
        "day              payouts     charged    expected  difference not checked\n"
        "2025-11-05             2       17.00       14.00        3.00           0\n"
        "total                  2       17.00       14.00        3.00           0\n"
    ) in text
    assert report.to_dict()["charges"][-1] == {
        "day": "total",
        "payouts": 2,
        "charged": "17.00",
        "expected": "14.00",
        "difference": "3.00",
        "not_checked": 0,
    }
    html = report.to_html()
    assert "<h2>Charges against the tariff</h2>" in html
    assert '<td>total</td><td class="number">2</td><td class="number">17.00</td>' in html


def test_the_scheduled_reconciliation_reads_the_tariff_setting(make_stack, tmp_path):
    from mpesa_service.jobs import email_reconciliation

    tariff = tmp_path / "tariff.csv"
    tariff.write_text(
        f"{','.join(COLUMNS)}\n,1,100,0,unknown,unknown,x\n,90,500,5,unknown,unknown,x\n"
    )
    stack = make_stack({"RECON_TARIFF": str(tariff), "RECON_EMAIL_TO": "finance@example.com"})

    with pytest.raises(TariffError, match=f"tariff {tariff} line 3: expected the band to start"):
        email_reconciliation(stack.svc)
