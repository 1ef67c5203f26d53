"""C2B payments in reconciliation: they join the statement match as Paid In rows by their
receipt (TransID); the checks for payments the statement lacks, statement C2B rows nobody
confirmed, and bill references that name no booking or user."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from recon.checks import (
    AT_RISK,
    Options,
    check_c2b_missing_from_statement,
    check_c2b_unknown_bill_ref,
    check_c2b_without_confirmation,
    check_missing_from_statement,
    check_unrecorded_statement_entry,
    run_checks,
)
from recon.frames import Frames
from recon.load import load_frames
from recon.statement import parse_statement
from tests.recon_support import (
    AS_OF,
    OPTIONS,
    at,
    balanced_statement,
    nairobi,
    seed,
    write_statement,
)

# The Nairobi day the statements' header covers, 2025-11-05, in UTC.
THE_DAY = Options(as_of=AS_OF, since=datetime(2025, 11, 4, 21), until=datetime(2025, 11, 5, 21))


def c2b(id, trans_id, amount, hour, bill_ref="BK1234", source="confirmation") -> dict:
    return {
        "id": id,
        "trans_id": trans_id,
        "amount": amount,
        "msisdn": "2547 ***** 126",
        "bill_ref_number": bill_ref,
        "source": source,
        "outcome": "recorded",
        "trans_time": at(hour),
        "received_at": at(hour),
        "confirmed_at": at(hour) if source == "confirmation" else None,
    }


def statement(tmp_path, movements):
    rows, header = balanced_statement(movements)
    return parse_statement(write_statement(tmp_path / "statement.csv", rows, header))


def test_a_c2b_payment_on_the_statement_is_matched_and_clean(tmp_path):
    data = Frames.from_records(
        c2b=[c2b("c1", "TKC001", "1500.00", 9), c2b("c2", "TKC002", "99.50", 10, source="pull")],
        statement=statement(
            tmp_path,
            [
                ("TKC001", nairobi(at(9)), "1500.00", None, "Pay Bill Online"),
                ("TKC002", nairobi(at(10)), "99.50", None, "Buy Goods"),
            ],
        ),
    )
    assert run_checks(data, THE_DAY).frame.empty


def test_a_c2b_payment_the_statement_lacks_is_named_as_c2b(tmp_path):
    data = Frames.from_records(
        c2b=[c2b("c1", "TKC001", "1500.00", 9), c2b("c2", "TKC002", "700.00", 10)],
        statement=statement(tmp_path, [("TKC001", nairobi(at(9)), "1500.00", None, "Pay Bill")]),
    )

    found = check_c2b_missing_from_statement(data, options=OPTIONS)

    assert list(found["subject"]) == ["c2b TKC002"]
    assert found.iloc[0]["at_risk"] == Decimal("700.00")
    assert found.iloc[0]["reason"] == (
        "C2B payment missing from statement: expected receipt TKC002 (paid in 700.00) in the "
        "statement != not found (700.00 unconfirmed)"
    )
    assert check_missing_from_statement(data, options=OPTIONS).empty  # reported once


def test_a_statement_c2b_row_without_a_confirmation_is_named_as_c2b(tmp_path):
    data = Frames.from_records(
        c2b=[c2b("c1", "TKC001", "1500.00", 9)],
        statement=statement(
            tmp_path,
            [
                ("TKC001", nairobi(at(9)), "1500.00", None, "Pay Bill Online"),
                ("TKC009", nairobi(at(11)), "250.00", None, "Pay Bill Online"),
                ("TKS009", nairobi(at(12)), "40.00", None, "Pay Utility"),  # an STK push's
            ],
        ),
    )

    c2b_rows = check_c2b_without_confirmation(data, options=OPTIONS)
    others = check_unrecorded_statement_entry(data, options=OPTIONS)

    assert [(row.transaction_id, row.at_risk) for row in c2b_rows.itertuples()] == [
        ("TKC009", Decimal("250.00"))
    ]
    assert c2b_rows.iloc[0]["reason"] == (
        "C2B statement entry without a confirmation: expected a C2B payment TKC009 != none "
        "found (paid in 250.00 unaccounted)"
    )
    assert list(others["transaction_id"]) == ["TKS009"]


def test_a_reversed_c2b_payment_is_a_reversal(tmp_path):
    data = Frames.from_records(
        c2b=[c2b("c1", "TKC001", "1500.00", 9)],
        statement=statement(
            tmp_path,
            [
                ("TKC001", nairobi(at(9)), "1500.00", None, "Pay Bill Online"),
                ("TKC001", nairobi(at(10)), None, "1500.00", "Pay Bill Online"),
            ],
        ),
    )
    found = run_checks(data, THE_DAY).frame
    assert list(found["check"]) == ["reversal"]


@pytest.mark.parametrize(("known", "findings"), [(True, 0), (False, 1), (None, 0)])
def test_an_unknown_bill_reference_is_counted_not_valued(known, findings):
    data = Frames.from_records(c2b=[{**c2b("c1", "TKC001", "1500.00", 9), "bill_ref_known": known}])
    found = check_c2b_unknown_bill_ref(data, options=OPTIONS)
    assert len(found) == findings
    assert AT_RISK["c2b_unknown_bill_ref"] is None
    if findings:
        assert found.iloc[0]["reason"] == (
            "C2B bill reference unknown: expected a booking or user for 'BK1234' != none found "
            "(1,500.00 received, not attributed)"
        )


def test_bill_references_are_looked_up_with_the_configured_query(engine, database_url):
    seed(
        engine,
        payments=[{"id": "b1", "booking_id": "BK1234", "method": "mpesa", "created_at": at(1)}],
        c2b=[
            c2b("c1", "TKC001", "1500.00", 9, bill_ref="BK1234"),
            c2b("c2", "TKC002", "200.00", 10, bill_ref="nobody"),
        ],
    )
    query = "SELECT 1 FROM payments WHERE booking_id = :bill_ref"

    looked_up = load_frames(database_url, bill_ref_query=query)
    not_asked = load_frames(database_url)

    known = dict(zip(looked_up.c2b["receipt"], looked_up.c2b["bill_ref_known"], strict=True))
    assert known == {"TKC001": True, "TKC002": False}
    assert not_asked.c2b["bill_ref_known"].isna().all()
    found = check_c2b_unknown_bill_ref(looked_up, options=OPTIONS)
    assert list(found["subject"]) == ["c2b TKC002"]
