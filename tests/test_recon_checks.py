"""Each check on small frames written in the test, legacy rows (old columns only) included."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from recon.checks import (
    CHECK_NAMES,
    FINDING_COLUMNS,
    Options,
    check_amount_mismatch,
    check_duplicate_callback,
    check_failed_result,
    check_missing_from_statement,
    check_orphan_callback,
    check_possible_double_payout,
    check_reversal,
    check_stale_pending,
    check_statement_amount_mismatch,
    check_statement_integrity,
    check_status_conflict,
    check_stk_amount_mismatch,
    check_unrecorded_statement_entry,
    run_checks,
)
from recon.frames import Frames
from recon.statement import parse_statement
from tests.recon_support import (
    AS_OF,
    OPTIONS,
    at,
    attempt,
    balanced_statement,
    entry,
    legacy_payout,
    legacy_result,
    nairobi,
    new_payout,
    new_result,
    write_statement,
)


def frames(**tables) -> Frames:
    return Frames.from_records(**tables)


# -- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payout_keys, result_keys",
    [
        ({"originator_conversation_id": "OC1"}, {"originator_conversation_id": "OC1"}),
        ({"conversation_id": "AG1"}, {"conversation_id": "AG1"}),
        ({"transaction_id": "TK1"}, {"transaction_id": "TK1"}),
        ({"reference_id": "REF1"}, {"reference_id": "REF1"}),
    ],
    ids=["ocid", "conversation_id", "transaction_id", "legacy reference_id"],
)
def test_a_result_matches_its_payout_by_each_key(payout_keys, result_keys):
    payout = {"id": "p1", "amount": "100.00", "status": "completed", **payout_keys}
    result = {"id": "r1", "result_code": 0, "transaction_amount": "90.00", **result_keys}

    found = check_amount_mismatch(frames(payouts=[payout], results=[result]), options=OPTIONS)

    assert list(found["payout_id"]) == ["p1"]


def test_a_result_for_an_earlier_attempt_matches_through_the_attempts_table():
    payout = new_payout("p01", "100.00", "completed", ocid="OC-2ND")
    result = new_result("r1", ocid="OC-1ST", code=0, amount="90.00", txn="TK1")

    found = check_amount_mismatch(
        frames(payouts=[payout], attempts=[attempt("p01", "OC-1ST")], results=[result]),
        options=OPTIONS,
    )

    assert list(found["payout_id"]) == ["p01"]


def test_ocid_wins_over_a_reference_id_pointing_elsewhere():
    payouts = [
        {"id": "p1", "amount": "100", "status": "completed", "originator_conversation_id": "OC1"},
        {"id": "p2", "amount": "100", "status": "completed", "reference_id": "REF"},
    ]
    result = {
        "id": "r1",
        "result_code": 0,
        "transaction_amount": "50",
        "originator_conversation_id": "OC1",
        "reference_id": "REF",
    }

    found = check_amount_mismatch(frames(payouts=payouts, results=[result]), options=OPTIONS)

    assert list(found["payout_id"]) == ["p1"]


# -- amount_mismatch --------------------------------------------------------------------------


def test_amount_mismatch_says_requested_paid_and_how_much_short():
    found = check_amount_mismatch(
        frames(
            payouts=[new_payout("p01", "1000.00", "completed", ocid="OC1")],
            results=[new_result("r1", ocid="OC1", code=0, amount="100.00", txn="TK1")],
        ),
        options=OPTIONS,
    )

    row = found.iloc[0]
    assert row["reason"] == "amount mismatch: requested 1,000.00 != paid 100.00 (900.00 short)"
    assert (row["expected_amount"], row["actual_amount"]) == (Decimal("1000.00"), Decimal("100.00"))
    assert row["at_risk"] == Decimal("900.00")
    assert row["transaction_id"] == "TK1"


def test_amount_mismatch_on_legacy_rows_says_over():
    found = check_amount_mismatch(
        frames(
            payouts=[legacy_payout("p02", "500.00", "completed", reference="REF2")],
            results=[legacy_result("r2", reference="REF2", code=0, amount="500.10", txn="TK2")],
        ),
        options=OPTIONS,
    )

    assert list(found["reason"]) == ["amount mismatch: requested 500.00 != paid 500.10 (0.10 over)"]


@pytest.mark.parametrize(
    "result_amount, tolerance_cents, flagged",
    [("100.00", 0, False), ("100.01", 0, True), ("100.01", 1, False), ("99.98", 1, True)],
)
def test_amount_mismatch_respects_the_tolerance(result_amount, tolerance_cents, flagged):
    data = frames(
        payouts=[new_payout("p01", "100.00", "completed", ocid="OC1")],
        results=[new_result("r1", ocid="OC1", code=0, amount=result_amount)],
    )

    found = check_amount_mismatch(
        data, options=Options(as_of=AS_OF, amount_tolerance_cents=tolerance_cents)
    )

    assert len(found) == int(flagged)


def test_amount_mismatch_uses_exact_cents_not_floats():
    data = frames(
        payouts=[{"id": "p1", "amount": "0.30", "status": "completed", "reference_id": "R"}],
        results=[
            {"id": "r1", "result_code": 0, "transaction_amount": 0.1 + 0.2, "reference_id": "R"}
        ],
    )

    assert check_amount_mismatch(data, options=OPTIONS).empty


def test_amount_mismatch_ignores_failed_results():
    data = frames(
        payouts=[new_payout("p01", "100.00", "failed", ocid="OC1")],
        results=[new_result("r1", ocid="OC1", code=1, amount="0.00")],
    )

    assert check_amount_mismatch(data, options=OPTIONS).empty


# -- orphan_callback --------------------------------------------------------------------------


def test_orphan_callback_reports_a_result_matching_no_payout():
    found = check_orphan_callback(
        frames(
            payouts=[new_payout("p01", "100.00", "completed", ocid="OC1")],
            results=[new_result("r9", ocid="OC-NOBODY", code=0, amount="50.00", txn="TK9")],
        ),
        options=OPTIONS,
    )

    assert list(found["subject"]) == ["result r9"]
    assert found.iloc[0]["reason"] == (
        "orphan callback: expected 1 matching payout for OC-NOBODY != 0 found (50.00 unaccounted)"
    )


def test_orphan_callback_reports_a_legacy_result_with_an_unknown_reference():
    found = check_orphan_callback(
        frames(
            payouts=[legacy_payout("p02", "500.00", "completed", reference="REF2")],
            results=[legacy_result("r3", reference="REF-GONE", code=2001)],
        ),
        options=OPTIONS,
    )

    assert list(found["subject"]) == ["result r3"]
    assert found.iloc[0]["at_risk"] == Decimal("0.00")


def test_matched_results_are_not_orphans():
    data = frames(
        payouts=[legacy_payout("p02", "500.00", "completed", reference="REF2")],
        results=[legacy_result("r2", reference="REF2", code=0, amount="500.00")],
    )

    assert check_orphan_callback(data, options=OPTIONS).empty


# -- failed_result ----------------------------------------------------------------------------


def test_failed_result_names_the_code_and_its_meaning():
    found = check_failed_result(
        frames(
            payouts=[new_payout("p01", "100.00", "failed", ocid="OC1")],
            results=[new_result("r1", ocid="OC1", code="SFC_IC0003")],
        ),
        options=OPTIONS,
    )

    assert list(found["reason"]) == [
        "failed result: expected result code 0 != SFC_IC0003 "
        "(recipient phone number does not exist)"
    ]
    assert list(found["result_code"]) == ["SFC_IC0003"]


def test_failed_result_reads_a_legacy_int_code():
    found = check_failed_result(
        frames(
            payouts=[legacy_payout("p03", "300.00", "failed", reference="REF3")],
            results=[legacy_result("r3", reference="REF3", code=2001)],
        ),
        options=OPTIONS,
    )

    assert list(found["result_code"]) == ["2001"]


def test_failed_result_falls_back_to_a_legacy_reason_code_without_callback():
    found = check_failed_result(
        frames(payouts=[legacy_payout("p03", "300.00", "failed", reference="R", reason_code="1")]),
        options=OPTIONS,
    )

    assert list(found["reason"]) == [
        "failed result: expected result code 0 != 1 "
        "(insufficient balance in the B2C utility account)"
    ]


def test_a_later_successful_attempt_clears_an_earlier_failure():
    first = new_result("r1", ocid="OC-1", code=17, hour=8)
    second = new_result("r2", ocid="OC-2", code=0, amount="100.00", txn="TK2", hour=9)

    data = frames(
        payouts=[new_payout("p01", "100.00", "completed", ocid="OC-2")],
        attempts=[attempt("p01", "OC-1"), attempt("p01", "OC-2", number=2)],
        results=[first, second],
    )

    assert check_failed_result(data, options=OPTIONS).empty


def test_a_timeout_is_not_a_failed_result():
    data = frames(
        payouts=[new_payout("p01", "100.00", "unknown", ocid="OC1")],
        results=[new_result("r1", ocid="OC1", code=1, kind="timeout")],
    )

    assert check_failed_result(data, options=OPTIONS).empty


# -- stale_pending ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, minutes_old, stale",
    [
        ("pending", 31, True),
        ("unknown", 120, True),
        ("submitting", 45, True),
        ("review", 600, False),
        ("pending", 30, False),
        ("pending", 5, False),
        ("completed", 600, False),
        ("failed", 600, False),
    ],
)
def test_stale_pending_by_status_and_age(status, minutes_old, stale):
    payout = {
        "id": "p1",
        "amount": "10.00",
        "status": status,
        "initiated_at": AS_OF - timedelta(minutes=minutes_old),
    }

    found = check_stale_pending(frames(payouts=[payout]), options=OPTIONS)

    assert len(found) == int(stale)


def test_stale_pending_says_how_long_overdue():
    payout = legacy_payout("p05", "250.00", "pending", reference="R5", hour=22)

    found = check_stale_pending(frames(payouts=[payout]), options=OPTIONS)

    assert list(found["reason"]) == [
        "stale pending: expected a final status within 30 min != pending after 2.0 h "
        "(1.5 h overdue)"
    ]
    assert list(found["age_hours"]) == [2.0]


def test_stale_after_is_a_parameter():
    payout = legacy_payout("p05", "250.00", "pending", reference="R5", hour=22)

    found = check_stale_pending(
        frames(payouts=[payout]), options=Options(as_of=AS_OF, stale_after_minutes=180)
    )

    assert found.empty


# -- duplicate_callback -----------------------------------------------------------------------


def test_duplicate_callback_counts_results_of_one_attempt():
    found = check_duplicate_callback(
        frames(
            payouts=[new_payout("p07", "200.00", "completed", ocid="OC7")],
            results=[
                new_result("r1", ocid="OC7", code=0, amount="200.00", txn="TKA"),
                new_result("r2", ocid="OC7", code=0, amount="200.00", txn="TKB"),
            ],
        ),
        options=OPTIONS,
    )

    row = found.iloc[0]
    assert row["reason"] == "duplicate callback: expected 1 result != 2 received (1 extra)"
    assert row["transaction_id"] == "TKA, TKB"
    assert row["at_risk"] is None  # the second receipt's money is paid_twice's to count


def test_duplicate_callback_on_legacy_rows_by_reference():
    found = check_duplicate_callback(
        frames(
            payouts=[legacy_payout("p02", "500.00", "failed", reference="REF2")],
            results=[
                legacy_result("r1", reference="REF2", code=1),
                legacy_result("r2", reference="REF2", code=1),
            ],
        ),
        options=OPTIONS,
    )

    assert list(found["payout_id"]) == ["p02"]
    assert found.iloc[0]["at_risk"] is None


def test_one_result_per_attempt_is_not_a_duplicate():
    data = frames(
        payouts=[new_payout("p01", "100.00", "completed", ocid="OC-2")],
        attempts=[attempt("p01", "OC-1"), attempt("p01", "OC-2", number=2)],
        results=[
            new_result("r1", ocid="OC-1", code=17),
            new_result("r2", ocid="OC-2", code=0, amount="100.00", txn="TK2"),
        ],
    )

    assert check_duplicate_callback(data, options=OPTIONS).empty


# -- status_conflict --------------------------------------------------------------------------


def test_status_conflict_flags_a_payout_marked_failed_that_was_paid():
    found = check_status_conflict(
        frames(
            payouts=[new_payout("p04", "700.00", "failed", ocid="OC4")],
            results=[new_result("r4", ocid="OC4", code=0, amount="700.00", txn="TK4")],
        ),
        options=OPTIONS,
    )

    row = found.iloc[0]
    assert row["reason"] == (
        "status conflict: expected completed (results say paid) != recorded failed "
        "(paid but marked failed)"
    )
    assert row["transaction_id"] == "TK4"


def test_status_conflict_flags_a_legacy_payout_completed_with_only_a_failed_result():
    found = check_status_conflict(
        frames(
            payouts=[legacy_payout("p02", "500.00", "completed", reference="REF2")],
            results=[legacy_result("r2", reference="REF2", code=2001)],
        ),
        options=OPTIONS,
    )

    assert list(found["reason"]) == [
        "status conflict: expected failed (results say not paid) != recorded completed "
        "(marked completed but not paid)"
    ]


@pytest.mark.parametrize("status, code", [("completed", 0), ("failed", 1), ("pending", 0)])
def test_status_agreeing_with_results_is_no_conflict(status, code):
    data = frames(
        payouts=[new_payout("p01", "100.00", status, ocid="OC1")],
        results=[new_result("r1", ocid="OC1", code=code, amount="100.00")],
    )

    assert check_status_conflict(data, options=OPTIONS).empty


# -- possible_double_payout -------------------------------------------------------------------


def test_possible_double_payout_same_phone_same_amount_within_a_day():
    first = new_payout("p08", "1500.00", "completed", phone="254711000099", hour=6)
    second = new_payout("p09", "1500.00", "completed", phone="254711000099", hour=20)

    found = check_possible_double_payout(frames(payouts=[first, second]), options=OPTIONS)

    assert list(found["payout_id"]) == ["p09"]
    assert found.iloc[0]["reason"] == (
        "possible double payout: expected 1 payout of 1,500.00 to phone 254711000099 within "
        "24 h != 2 (1,500.00 over; also payout REF-p08)"
    )


def test_possible_double_payout_same_legacy_user_different_phones():
    first = legacy_payout("p01", "100.00", "completed", reference="R1")
    second = {**legacy_payout("p02", "100.00", "completed", reference="R2"), "user_id": "user-p01"}

    found = check_possible_double_payout(frames(payouts=[first, second]), options=OPTIONS)

    assert list(found["payout_id"]) == ["p02"]


@pytest.mark.parametrize(
    "second_amount, second_status, window_hours, flagged",
    [
        ("1500.00", "completed", 24, True),
        ("1500.00", "completed", 10, False),
        ("1499.00", "completed", 24, False),
        ("1500.00", "failed", 24, False),
    ],
)
def test_possible_double_payout_edges(second_amount, second_status, window_hours, flagged):
    first = new_payout("p08", "1500.00", "completed", phone="254711000099", hour=6)
    second = new_payout("p09", second_amount, second_status, phone="254711000099", hour=20)

    found = check_possible_double_payout(
        frames(payouts=[first, second]),
        options=Options(as_of=AS_OF, double_payout_window_hours=window_hours),
    )

    assert len(found) == int(flagged)


# -- stk_amount_mismatch ----------------------------------------------------------------------


def test_stk_amount_mismatch_compares_paid_with_requested():
    payment = {
        "id": "s1",
        "amount": "1000.00",
        "paid_amount": "900.00",
        "status": "completed",
        "receipt": "TKS1",
    }

    found = check_stk_amount_mismatch(frames(stk=[payment]), options=OPTIONS)

    assert list(found["reason"]) == [
        "STK amount mismatch: requested 1,000.00 != paid 900.00 (100.00 short)"
    ]
    assert list(found["transaction_id"]) == ["TKS1"]


@pytest.mark.parametrize("paid", ["1000.00", None], ids=["equal", "legacy row without paid"])
def test_stk_amount_mismatch_clean_cases(paid):
    payment = {"id": "s1", "amount": "1000.00", "paid_amount": paid, "status": "completed"}

    assert check_stk_amount_mismatch(frames(stk=[payment]), options=OPTIONS).empty


# -- statement checks -------------------------------------------------------------------------

PAYOUT = "Business Payment to Customer via API"


def statement(tmp_path, movements, **kwargs):
    rows, header = balanced_statement(movements, **kwargs)
    return parse_statement(write_statement(tmp_path / "statement.csv", rows, header))


def test_missing_from_statement_flags_a_completed_payout_whose_receipt_is_absent(tmp_path):
    data = frames(
        payouts=[
            new_payout("p01", "100.00", "completed", txn="TK1", hour=6),
            legacy_payout("p02", "200.00", "completed", reference="R2", txn="TK2", hour=7),
        ],
        statement=statement(tmp_path, [("TK1", nairobi(at(6, 1)), None, "100.00", PAYOUT)]),
    )

    found = check_missing_from_statement(data, options=OPTIONS)

    assert list(found["payout_id"]) == ["p02"]
    assert found.iloc[0]["reason"] == (
        "missing from statement: expected receipt TK2 (withdrawn 200.00) in the statement "
        "!= not found (200.00 unconfirmed)"
    )


def test_missing_from_statement_uses_the_legacy_stk_receipt(tmp_path):
    data = frames(
        stk=[
            {
                "id": "s2",
                "amount": "100.00",
                "status": "completed",
                "receipt": "TKS2",
                "created_at": at(13),
            }
        ],
        statement=statement(tmp_path, [("TKS2", nairobi(at(13)), "100.00", None, "Pay Utility")]),
    )

    assert check_missing_from_statement(data, options=OPTIONS).empty


def test_missing_from_statement_ignores_payouts_outside_the_statement_period(tmp_path):
    late = new_payout("p01", "100.00", "completed", txn="TK1", hour=23)

    data = frames(payouts=[late], statement=statement(tmp_path, []))

    assert check_missing_from_statement(data, options=OPTIONS).empty


def test_unrecorded_statement_entry_flags_money_we_have_no_record_of(tmp_path):
    data = frames(
        payouts=[new_payout("p01", "100.00", "completed", txn="TK1", hour=6)],
        statement=statement(
            tmp_path,
            [
                ("TK1", nairobi(at(6, 1)), None, "100.00", PAYOUT),
                ("TK1", nairobi(at(6, 1)), None, "5.00", "Withdrawal Charge"),
                ("TKX", nairobi(at(9)), None, "999.00", PAYOUT),
                ("TKY", nairobi(at(10)), "50.00", None, "Pay Utility"),
            ],
        ),
    )

    found = check_unrecorded_statement_entry(data, options=OPTIONS)

    assert list(found["transaction_id"]) == ["TKX", "TKY"]
    assert list(found["reason"]) == [
        "unrecorded statement entry: expected a record of receipt TKX != none found "
        "(withdrawn 999.00 unaccounted)",
        "unrecorded statement entry: expected a record of receipt TKY != none found "
        "(paid in 50.00 unaccounted)",
    ]


def test_a_receipt_known_only_from_a_result_is_recorded(tmp_path):
    data = frames(
        payouts=[legacy_payout("p02", "200.00", "completed", reference="R2")],
        results=[legacy_result("r2", reference="R2", code=0, amount="200.00", txn="TK2")],
        statement=statement(tmp_path, [("TK2", nairobi(at(8)), None, "200.00", PAYOUT)]),
    )

    assert check_unrecorded_statement_entry(data, options=OPTIONS).empty
    assert check_missing_from_statement(data, options=OPTIONS).empty


def test_statement_amount_mismatch_compares_payout_with_withdrawn(tmp_path):
    data = frames(
        payouts=[legacy_payout("p02", "500.00", "completed", reference="R2", txn="TK2")],
        statement=statement(tmp_path, [("TK2", nairobi(at(8)), None, "450.00", PAYOUT)]),
    )

    found = check_statement_amount_mismatch(data, options=OPTIONS)

    assert list(found["reason"]) == [
        "statement amount mismatch: recorded 500.00 != statement 450.00 (50.00 short)"
    ]


@pytest.mark.parametrize(
    "paid_in, reasons, at_risk",
    [
        (
            "800.00",
            ["statement amount mismatch: recorded 900.00 != statement 800.00 (100.00 short)"],
            [Decimal("100.00")],
        ),
        ("1000.00", [], []),  # the statement agrees with the request: stk_amount_mismatch counts it
        ("900.00", [], []),
    ],
)
def test_statement_amount_mismatch_compares_stk_paid_with_paid_in(
    tmp_path, paid_in, reasons, at_risk
):
    payment = {
        "id": "s1",
        "amount": "1000.00",
        "paid_amount": "900.00",
        "status": "completed",
        "receipt": "TKS1",
        "created_at": at(13),
    }
    data = frames(
        stk=[payment],
        statement=statement(tmp_path, [("TKS1", nairobi(at(13)), paid_in, None, "Pay Utility")]),
    )

    found = check_statement_amount_mismatch(data, options=OPTIONS)

    assert list(found["reason"]) == reasons
    assert list(found["at_risk"]) == at_risk


def test_statement_integrity_reports_the_parsers_problems(tmp_path):
    data = frames(
        statement=statement(
            tmp_path,
            [("TK1", nairobi(at(6)), None, "100.00", PAYOUT)],
            total_withdrawn_error=Decimal("1.00"),
        )
    )

    found = check_statement_integrity(data, options=OPTIONS)

    assert list(found["reason"]) == [
        "statement integrity: total withdrawn: expected 101.00 (header) != rows 100.00 (1.00 short)"
    ]


REFUNDED = {  # a collection the service reversed, TKR1 the reversal's receipt
    "id": "s1",
    "amount": "100.00",
    "paid_amount": "100.00",
    "status": "reversed",
    "result_code": "0",
    "receipt": "TKS1",
    "checkout_request_id": "ws_CO_1",
    "created_at": at(9),
    "completed_at": at(9),
    "reversal_receipt": "TKR1",
}
NOT_REVERSED_BY_US = {**REFUNDED, "status": "completed", "reversal_receipt": None}


def reversal_statement(tmp_path, receipt, linked):
    """The collection's Paid In row, then a reversal row giving the money back."""
    back = entry(receipt, nairobi(at(10)), withdrawn="-100.00", reason="Reversal")
    rows = [
        entry("TKS1", nairobi(at(9)), paid_in="100.00", reason="Pay Utility"),
        {**back, "Linked Transaction ID": linked},
    ]
    return parse_statement(write_statement(tmp_path / "statement.csv", rows))


@pytest.mark.parametrize(
    ("collection", "receipt", "linked", "found"),
    [
        (REFUNDED, "TKR1", "TKS1", []),  # ours, linked to the collection
        (REFUNDED, "TKR1", "", []),  # ours, by its own receipt alone
        (REFUNDED, "TKS1", "", []),  # ours, the money going back under the collection's receipt
        (REFUNDED, "TKR9", "TKS1", ["reversal"]),  # reversed again by someone else
        (NOT_REVERSED_BY_US, "TKR1", "TKS1", ["reversal"]),
    ],
    ids=["linked", "own receipt", "collection receipt", "another reversal", "not by us"],
)
def test_a_collection_the_service_reversed_matches_its_reversal_row(
    tmp_path, collection, receipt, linked, found
):
    data = frames(stk=[collection], statement=reversal_statement(tmp_path, receipt, linked))

    checks = (check_reversal, check_unrecorded_statement_entry, check_missing_from_statement)
    findings = [f for check in checks for f in check(data, options=OPTIONS)["check"]]

    assert findings == found


REFUNDED_C2B = {  # a C2B payment the service reversed, TKR1 the reversal's receipt
    "id": "c1",
    "trans_id": "TKS1",
    "amount": "100.00",
    "source": "confirmation",
    "outcome": "recorded",
    "trans_time": at(9),
    "received_at": at(9),
    "confirmed_at": at(9),
    "reversal_receipt": "TKR1",
}


@pytest.mark.parametrize(
    ("payment", "receipt", "found"),
    [
        (REFUNDED_C2B, "TKR1", []),
        (REFUNDED_C2B, "TKR9", ["reversal"]),
        ({**REFUNDED_C2B, "reversal_receipt": None}, "TKR1", ["reversal"]),
    ],
    ids=["ours", "another reversal", "not by us"],
)
def test_a_c2b_payment_the_service_reversed_matches_its_reversal_row(
    tmp_path, payment, receipt, found
):
    data = frames(c2b=[payment], statement=reversal_statement(tmp_path, receipt, "TKS1"))

    checks = (check_reversal, check_unrecorded_statement_entry, check_missing_from_statement)
    findings = [f for check in checks for f in check(data, options=OPTIONS)["check"]]

    assert findings == found


def test_statement_checks_are_empty_without_a_statement():
    data = frames(payouts=[new_payout("p01", "100.00", "completed", txn="TK1")])

    for check in (
        check_missing_from_statement,
        check_unrecorded_statement_entry,
        check_statement_amount_mismatch,
        check_statement_integrity,
    ):
        assert check(data, options=OPTIONS).empty


# -- the runner -------------------------------------------------------------------------------


def test_run_checks_on_empty_frames_is_clean_and_lists_every_check():
    findings = run_checks(frames(), OPTIONS)

    assert findings.is_clean
    assert list(findings.frame.columns) == FINDING_COLUMNS
    assert list(findings.summary()["check"]) == list(CHECK_NAMES)


def test_run_checks_never_raises_on_rows_with_missing_values():
    data = frames(
        payouts=[{"id": "p1"}, {"id": "p2", "status": "completed", "amount": "abc"}],
        results=[{"id": "r1"}, {"id": "r2", "result_code": 0}],
        stk=[{"id": "s1", "paid_amount": "1.00"}],
    )

    findings = run_checks(data, OPTIONS)

    assert set(findings.frame["check"]) <= set(CHECK_NAMES)


def test_findings_keep_the_vocabulary_order():
    data = frames(
        payouts=[
            new_payout("p01", "100.00", "pending", ocid="OC1", hour=6),
            new_payout("p02", "100.00", "completed", ocid="OC2", hour=6),
        ],
        results=[new_result("r2", ocid="OC2", code=0, amount="90.00", txn="TK2")],
    )

    findings = run_checks(data, OPTIONS)

    assert list(findings.frame["check"]) == ["amount_mismatch", "stale_pending"]
    assert findings.counts()["amount_mismatch"] == 1
