"""Helpers for the recon tests: statement files, database seeding, and the known-answer data set
the end-to-end tests reconcile (every check fires exactly once on it)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

import service
from recon.checks import Options
from recon.statement import PORTAL_HEADER

AS_OF = datetime(2025, 11, 6, 0, 0, 0)
OPTIONS = Options(as_of=AS_OF)
PAYOUT_REASON = "Business Payment to Customer via API"
CHARGE_REASON = "Business Payment Charge"


def entry(
    receipt,
    when,
    *,
    paid_in="",
    withdrawn="",
    balance="",
    reason=PAYOUT_REASON,
    details="",
    status="Completed",
) -> dict:
    """One statement row as the portal writes it (strings)."""
    return {
        "Receipt No.": receipt,
        "Completion Time": when,
        "Initiation Time": when,
        "Details": details or reason,
        "Transaction Status": status,
        "Paid In": paid_in,
        "Withdrawn": withdrawn,
        "Balance": balance,
        "Balance Confirmed": "true",
        "Reason Type": reason,
        "Other Party Info": "",
        "Linked Transaction ID": "",
        "A/C No.": "",
    }


def header_block(
    *, opening, closing, paid_in, withdrawn, start="05-11-2025 00:00:00", end="05-11-2025 23:59:59"
) -> list[list[str]]:
    return [
        ["Account Holder:", "ACME PAYOUTS LTD"],
        ["Short Code:", "600996"],
        ["Account:", "Utility Account"],
        ["Time Period:", f"From {start}", "To", end],
        ["Operator:", "jane", "Date of Report: 06-11-2025 08:00:00"],
        [
            "Opening Balance:",
            opening,
            "Closing Balance:",
            closing,
            "Available Balance:",
            closing,
            "Total Paid In:",
            paid_in,
            "Total Withdrawn:",
            withdrawn,
        ],
    ]


def statement_csv(rows: list[dict], header: list[list[str]] | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for line in header or []:
        writer.writerow(line)
    writer.writerow(PORTAL_HEADER)
    for row in rows:
        writer.writerow([row.get(column, "") for column in PORTAL_HEADER])
    return buffer.getvalue()


def write_statement(path: Path, rows: list[dict], header=None) -> Path:
    path.write_text(statement_csv(rows, header), encoding="utf-8")
    return path


def balanced_statement(
    movements, *, opening=Decimal("100000.00"), header=True, total_withdrawn_error=Decimal(0)
):
    """Rows (receipt, nairobi time, paid_in, withdrawn, reason) with running balances, and a
    matching header block (its Total Withdrawn off by `total_withdrawn_error`)."""
    balance = opening
    rows = []
    paid_total = withdrawn_total = Decimal(0)
    for receipt, when, paid_in, withdrawn, reason in movements:
        balance += Decimal(paid_in or 0) - Decimal(withdrawn or 0)
        paid_total += Decimal(paid_in or 0)
        withdrawn_total += Decimal(withdrawn or 0)
        rows.append(
            entry(
                receipt,
                when,
                paid_in=_money(paid_in),
                withdrawn=_money(withdrawn, sign=-1),
                balance=f"{balance:,.2f}",
                reason=reason,
            )
        )
    block = header_block(
        opening=f"{opening:,.2f}",
        closing=f"{balance:,.2f}",
        paid_in=f"{paid_total:,.2f}",
        withdrawn=f"{withdrawn_total + total_withdrawn_error:,.2f}",
    )
    return rows, (block if header else None)


def _money(value, sign=1) -> str:
    return "" if not value else f"{sign * Decimal(value):,.2f}"


# -- database -----------------------------------------------------------------------------------


def seed(engine: sa.Engine, **tables: list[dict]) -> None:
    """Insert rows into service tables by name (payouts, results, attempts, payments,
    stk_callbacks)."""
    targets = {
        "payouts": service.b2c_payments,
        "results": service.b2c_payment_callbacks,
        "attempts": service.b2c_payout_attempts,
        "payments": service.payments,
        "stk_callbacks": service.stk_callbacks,
        "c2b": service.c2b_payments,
    }
    with engine.begin() as connection:
        for name, rows in tables.items():
            for row in rows:  # one by one: legacy and new rows fill different columns
                connection.execute(targets[name].insert(), row)


def at(hour: int, minute: int = 0) -> datetime:
    """A UTC time on 2025-11-05, the day the known-answer data set covers."""
    return datetime(2025, 11, 5, hour, minute)


def nairobi(moment: datetime) -> str:
    """The statement's rendering of a UTC time (Nairobi is UTC+3)."""
    return (moment + timedelta(hours=3)).strftime("%d-%m-%Y %H:%M:%S")


def new_payout(id, amount, status, *, ocid=None, txn=None, phone=None, user=None, hour=8):
    return {
        "id": id,
        "user_id": user or f"user-{id}",
        "phone_number": phone or f"2547110000{id[-2:]}",
        "amount": Decimal(amount),
        "status": status,
        "reference_id": f"REF-{id}",
        "originator_conversation_id": ocid,
        "conversation_id": f"AG_{id}" if ocid else None,
        "transaction_id": txn,
        "initiated_at": at(hour),
        "completed_at": at(hour, 1) if status == "completed" else None,
    }


def legacy_payout(id, amount, status, *, reference, txn=None, reason_code=None, hour=8, minute=0):
    """A row the PHP system wrote: old columns only."""
    return {
        "id": id,
        "user_id": f"user-{id}",
        "user_type": "trainer",
        "phone_number": f"2547220000{id[-2:]}",
        "amount": Decimal(amount),
        "reference_id": reference,
        "transaction_id": txn,
        "status": status,
        "reason_code": reason_code,
        "initiated_at": at(hour, minute),
        "completed_at": at(hour, 1) if status == "completed" else None,
    }


def new_result(id, *, ocid, code, amount=None, txn=None, hour=8, kind="result"):
    return {
        "id": id,
        "originator_conversation_id": ocid,
        "result_code": int(code) if str(code).isdigit() else None,
        "result_code_text": str(code),
        "transaction_amount": None if amount is None else Decimal(amount),
        "transaction_id": txn,
        "received_at": at(hour, 2),
        "kind": kind,
    }


def legacy_result(id, *, reference, code, amount=None, txn=None, hour=8):
    """A callback row the PHP system wrote: INT result_code, reference_id, no kind."""
    return {
        "id": id,
        "transaction_id": txn,
        "result_code": code,
        "transaction_amount": None if amount is None else Decimal(amount),
        "reference_id": reference,
        "received_at": at(hour, 2),
    }


def attempt(payout_id, ocid, *, number=1):
    return {
        "id": f"att-{ocid}",
        "payout_id": payout_id,
        "attempt_no": number,
        "originator_conversation_id": ocid,
        "status": "accepted",
        "created_at": at(6),
    }


KNOWN_ANSWER = {
    "amount_mismatch": 1,
    "orphan_callback": 1,
    "failed_result": 1,
    "stale_pending": 1,
    "duplicate_callback": 1,
    "paid_twice": 1,
    "status_conflict": 1,
    "possible_double_payout": 1,
    "stk_amount_mismatch": 1,
    "unreadable_value": 0,  # needs text in a DECIMAL column, which only SQLite keeps
    "duplicate_receipt": 1,
    "missing_from_statement": 1,
    "unrecorded_statement_entry": 1,
    "c2b_missing_from_statement": 0,  # no C2B payment that day (tests/test_c2b.py has them)
    "c2b_without_confirmation": 0,
    "c2b_unknown_bill_ref": 0,
    "statement_amount_mismatch": 1,
    "reversal": 1,
    "statement_integrity": 1,
    "statement_coverage": 0,  # the statement covers the day reconciled
    "charge_mismatch": 1,
}


def seed_known_answer(engine: sa.Engine) -> None:
    """Rows on 2025-11-05 on which each check finds exactly one thing (see KNOWN_ANSWER; p07's
    two results with two receipts are both a duplicate callback and a payout paid twice)."""
    seed(
        engine,
        payouts=[
            new_payout("p01", "1000.00", "completed", ocid="OC01", txn="TKA001", hour=6),
            legacy_payout("p02", "500.00", "completed", reference="REF02", txn="TKL002", hour=7),
            legacy_payout("p03", "300.00", "failed", reference="REF03", reason_code="2001"),
            new_payout("p04", "700.00", "failed", ocid="OC04", hour=9),
            new_payout("p05", "250.00", "pending", ocid="OC05", hour=10),
            legacy_payout("p06", "90.00", "pending", reference="REF06", hour=23, minute=50),
            new_payout("p07", "200.00", "completed", ocid="OC07", txn="TKA007", hour=11),
            new_payout(
                "p08",
                "1500.00",
                "completed",
                ocid="OC08",
                txn="TKA008",
                phone="254711000099",
                hour=12,
            ),
            new_payout(
                "p09",
                "1500.00",
                "completed",
                ocid="OC09",
                txn="TKA009",
                phone="254711000099",
                hour=14,
            ),
            new_payout("p11", "800.00", "completed", ocid="OC11", txn="TKA011", hour=15),
        ],
        attempts=[attempt("p04", "OC04")],
        results=[
            new_result("r01", ocid="OC01", code=0, amount="100.00", txn="TKA001", hour=6),
            legacy_result("r02", reference="REF02", code=0, amount="500.00", txn="TKL002", hour=7),
            legacy_result("r03", reference="REF03", code=2001),
            new_result("r04", ocid="OC04", code=0, amount="700.00", txn="TKA004", hour=9),
            new_result("r07a", ocid="OC07", code=0, amount="200.00", txn="TKA007", hour=11),
            new_result("r07b", ocid="OC07", code=0, amount="200.00", txn="TKA107", hour=11),
            new_result("r08", ocid="OC08", code=0, amount="1500.00", txn="TKA008", hour=12),
            new_result("r09", ocid="OC09", code=0, amount="1500.00", txn="TKA009", hour=14),
            new_result("r10", ocid="OC-NOBODY", code=0, amount="50.00", txn="TKA010", hour=16),
            new_result("r11", ocid="OC11", code=0, amount="800.00", txn="TKA011", hour=15),
        ],
        payments=[
            {
                "id": "s01",
                "amount": Decimal("1000.00"),
                "paid_amount": Decimal("900.00"),
                "method": "mpesa",
                "status": "completed",
                "mpesa_receipt": "TKS001",
                "checkout_request_id": "ws_CO_s01",
                "result_code": "0",
                "phone_number": "254733000001",
                "created_at": at(13),
                "completed_at": at(13, 1),
            },
            {
                "id": "s02",
                "amount": Decimal("100.00"),
                "method": "mpesa",
                "status": "completed",
                "transaction_reference": "TKS002",
                "created_at": at(13),
            },
        ],
    )


def known_answer_statement(path: Path) -> Path:
    """The statement for the known-answer day: p02 shows 450 instead of 500, an unknown payout
    TKX999, p11 missing, p08 reversed, p09 withdrawn twice, p01 charged 15.00 where the shipped
    tariff says 5.00 (every other payout row charged its 5.00), and a header whose Total
    Withdrawn is 100.00 too high."""
    movements = [
        ("TKA001", nairobi(at(6, 1)), None, "1000.00", PAYOUT_REASON),
        ("TKA001", nairobi(at(6, 1)), None, "15.00", CHARGE_REASON),
        ("TKL002", nairobi(at(7, 1)), None, "450.00", PAYOUT_REASON),
        ("TKL002", nairobi(at(7, 1)), None, "5.00", CHARGE_REASON),
        ("TKA004", nairobi(at(9, 1)), None, "700.00", PAYOUT_REASON),
        ("TKA004", nairobi(at(9, 1)), None, "5.00", CHARGE_REASON),
        ("TKA007", nairobi(at(11, 1)), None, "200.00", PAYOUT_REASON),
        ("TKA007", nairobi(at(11, 1)), None, "5.00", CHARGE_REASON),
        ("TKA008", nairobi(at(12, 1)), None, "1500.00", PAYOUT_REASON),
        ("TKA008", nairobi(at(12, 1)), None, "5.00", CHARGE_REASON),
        ("TKS001", nairobi(at(13, 1)), "900.00", None, "Pay Utility"),
        ("TKS002", nairobi(at(13, 2)), "100.00", None, "Pay Utility"),
        ("TKA008", nairobi(at(12, 30)), "1500.00", None, "Reversal"),
        ("TKA009", nairobi(at(14, 1)), None, "1500.00", PAYOUT_REASON),
        ("TKA009", nairobi(at(14, 1)), None, "5.00", CHARGE_REASON),
        ("TKA009", nairobi(at(14, 2)), None, "1500.00", PAYOUT_REASON),
        ("TKA009", nairobi(at(14, 2)), None, "5.00", CHARGE_REASON),
        ("TKX999", nairobi(at(17, 0)), None, "999.00", PAYOUT_REASON),
        ("TKX999", nairobi(at(17, 0)), None, "5.00", CHARGE_REASON),
    ]
    rows, header = balanced_statement(movements, total_withdrawn_error=Decimal("100.00"))
    return write_statement(path, rows, header)
