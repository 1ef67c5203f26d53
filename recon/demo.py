"""Demo data: a week of realistic M-Pesa traffic in a migrated database, and the matching
org-portal statement, with every kind of anomaly the reconciliation knows about planted in it.

`python -m recon demo-data --database-url URL --statement OUT.csv [--seed N] [--days N]
[--end DATE]` fills an empty, migrated database (`python service.py migrate` with DATABASE_URL
set creates the tables; this module migrates nothing) so the notebooks show something on a fresh
machine. The same seed and end date always give the same rows and the same statement.

What is planted on top of the everyday traffic (normal payouts, failures with real result
codes, retries, STK collections paid, cancelled, timed out and expired, C2B paybill payments
customers made themselves, a few of them found by Pull Transactions, STK collections and a C2B
payment an operator reversed through the service, each with its statement reversal row, which
reconcile clean): at least one finding of every check in `recon.checks.CHECK_NAMES` but the two
in `NOT_PLANTED`, and a payout in every status of the service's state machine
(awaiting_approval, submitting, pending, unknown, completed, failed, review, rejected, expired:
the three above APPROVAL_ABOVE never sent). `PLANTED` names the findings. A C2B payment's bill
reference names an STK collection's booking; `BILL_REF_QUERY` is the lookup to reconcile with
(c2b_unknown_bill_ref needs it).

Each B2C payout row of the statement has the charge row the shipped tariff
(recon/tariffs/b2c.csv) asks on its Nairobi day, none where it asks nothing or does not know
the charge (recon then reports the payout as not checked).

Rows go into the migrated database's own tables, reflected with SQLAlchemy (recon never imports
the service); times are naive UTC, the statement is in Nairobi time.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from recon.codes import integer_code, meaning
from recon.load import make_engine
from recon.rules import NAIROBI, amount_difference
from recon.statement import PORTAL_HEADER
from recon.tariff import shipped_tariff

DEFAULT_SEED = 7
DEFAULT_DAYS = 7
OPENING_BALANCE = Decimal("1500000.00")
TOTAL_WITHDRAWN_ERROR = Decimal("100.00")  # the statement header's deliberate mistake
OVERCHARGE = Decimal("10.00")  # the planted charge's excess over the tariff
PAYOUTS_PER_DAY = 42
STK_PER_DAY = 58
C2B_PER_DAY = 14
CUSTOMERS = 400
STK_AMOUNTS = [50, 100, 150, 200, 250, 300, 450, 500, 800, 1000, 1200, 2000, 3500]
B2C_FAILURES = {"1": 4, "2040": 3, "SFC_IC0003": 3, "8": 2, "2001": 1, "11": 1}
B2C_RETRYABLE = ("17", "26")
STK_OUTCOMES = {
    "0": 70,
    "1032": 12,
    "1037": 6,
    "1": 5,
    "2001": 3,
    "1019": 2,
    "expired": 2,
}
NAMES = ["JANE", "JOHN", "MARY", "PETER", "GRACE", "JAMES", "FAITH", "DAVID", "ANN", "BRIAN"]
SURNAMES = ["WANJIKU", "OTIENO", "KAMAU", "ACHIENG", "MWANGI", "CHEBET", "NJOROGE", "WAMBUI"]
PAYOUT_REASON = "Business Payment to Customer via API"
CHARGE_REASON = "Business Payment Charge"
COLLECTION_REASON = "Pay Utility"  # an STK push to the paybill (REFERENCE 12.1)
C2B_REASON = "Pay Bill Online"  # a customer paying the paybill from the phone
# The booking a C2B payment's bill reference names, as C2B_BILL_REF_QUERY would find it.
BILL_REF_QUERY = "SELECT 1 FROM payments WHERE booking_id = :bill_ref"
FUNDING_REASON = "Organization Settlement Account to Utility Account transfer of funds"
REVERSAL_REASON = "Reversal"
SHORTCODE = "600999"  # the demo paybill: the statement's Short Code, the C2B payments' and
# the reversals' receiver party
STK_REVERSED = 3  # STK collections the service reversed (and one C2B payment)
REFUND_OPERATOR = "ops-desk"  # the operator key that asked for the reversals
# Maker-checker as a deployment with APPROVAL_ABOVE and APPROVAL_EXPIRES_HOURS set would run it.
APPROVAL_ABOVE = 50_000
APPROVAL_EXPIRES_HOURS = 24
MAKER, CHECKER = "payroll-app", "finance-lead"  # the key that created them, the one deciding
REFUND_REASONS = ["session cancelled by the trainer", "client paid twice", "booking cancelled"]
PLANTED = {
    "amount_mismatch": "a payout of 1,500.00 whose result says 1,000.00 was paid",
    "orphan_callback": "a paid result whose OriginatorConversationID matches no payout",
    "failed_result": "everyday failures (insufficient balance, unregistered recipient, ...)",
    "stale_pending": "pending and unknown payouts left hours or days before the end",
    "duplicate_callback": "a payout whose result callback was delivered twice",
    "status_conflict": "a payout marked failed although a later status result says paid",
    "possible_double_payout": "the same 2,500.00 paid twice to one customer within 2 hours",
    "stk_amount_mismatch": "STK collections paid short (and one overpaid)",
    "missing_from_statement": "a completed payout and a collection the statement lacks",
    "unrecorded_statement_entry": "a statement payout and collection nobody recorded",
    "statement_amount_mismatch": "a statement line 10.00 off, and the short-paid payout",
    "statement_integrity": "the header's Total Withdrawn is 100.00 too high",
    "paid_twice": "a payout whose two attempts were both paid, under two receipts",
    "duplicate_receipt": "a statement payout row listed twice",
    "reversal": "a payout the statement shows reversed (Paid In, Reason Type Reversal)",
    "charge_mismatch": "a payout charged 10.00 more than the tariff asks",
    "c2b_missing_from_statement": "a confirmed C2B payment the statement lacks",
    "c2b_without_confirmation": "a statement Pay Bill Online row no confirmation brought",
    "c2b_unknown_bill_ref": "a C2B payment whose bill reference names no booking (with "
    "BILL_REF_QUERY)",
}
NOT_PLANTED = {
    "unreadable_value": "the demo writes through typed columns, which hold only readable values",
    "statement_coverage": "the demo statement's Time Period is exactly the days generated",
}
# The service's tables the demo writes, in insert order. Their columns and types are the
# migrated database's, reflected (recon never imports the service): sql/migrations is the one
# schema.
DEMO_TABLES = (
    "b2c_payments",
    "payout_audit",
    "b2c_payout_attempts",
    "b2c_payment_callbacks",
    "status_queries",
    "payments",
    "stk_callbacks",
    "c2b_payments",
    "reversals",
    "reversal_callbacks",
    "collection_audit",
    "payment_flags",
)


class DemoError(Exception):
    """The demo data cannot be written; the message says what to do."""


def nairobi(moment: datetime) -> datetime:
    """A naive-UTC time as the naive Nairobi wall-clock time the statement and ids show."""
    return moment.replace(tzinfo=UTC).astimezone(NAIROBI).replace(tzinfo=None)


# -- the model of one attempt ---------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """How one B2C attempt went. outcome: paid, failed (a result with `code`), rejected (Daraja
    refused the request), accepted (no result yet), timeout (queue timeout), unknown (no answer
    to the request) or sending (the process died while sending)."""

    outcome: str
    code: str | None = None
    paid: Decimal | None = None  # the amount the result says was paid; None: the payout's
    latency: int = 10  # seconds from the request to the result
    redelivered: bool = False  # the result callback arrives twice


ATTEMPT_STATUS = {
    "paid": "completed",
    "failed": "failed",
    "rejected": "rejected",
    "accepted": "accepted",
    "timeout": "unknown",
    "unknown": "unknown",
    "sending": "sending",
}
PAYOUT_STATUS = {
    "paid": "completed",
    "failed": "failed",
    "rejected": "failed",
    "accepted": "pending",
    "timeout": "unknown",
    "unknown": "unknown",
    "sending": "submitting",
}


@dataclass(frozen=True)
class Customer:
    user_id: str
    phone: str
    name: str


@dataclass(frozen=True)
class StatementLine:
    receipt: str
    completed_at: datetime  # naive UTC
    paid_in: Decimal = Decimal(0)
    withdrawn: Decimal = Decimal(0)
    reason: str = PAYOUT_REASON
    other_party: str = ""
    overcharged: Decimal = Decimal(0)  # charged this much above the tariff
    account: str = ""  # A/C No.: what the payer typed
    linked: str = ""  # Linked Transaction ID: the receipt a reversal undoes


@dataclass
class DemoData:
    """The rows per table and the statement lines of one generated data set."""

    start: datetime
    end: datetime
    rows: dict[str, list[dict]] = field(default_factory=lambda: {name: [] for name in DEMO_TABLES})
    statement: list[StatementLine] = field(default_factory=list)

    def count(self, table: str) -> int:
        return len(self.rows[table])


# -- generation -----------------------------------------------------------------------------------


class _Generator:
    def __init__(self, seed: int, start: datetime, end: datetime):
        # Reproducible demo data, not a secret.
        self.rng = random.Random(seed)  # nosec B311
        self.data = DemoData(start=start, end=end)
        self.receipts: set[str] = set()
        self.customers = [self._customer(number) for number in range(1, CUSTOMERS + 1)]

    # identifiers

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def receipt(self, when: datetime) -> str:
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        while True:
            text = "T" + "ABCDEFGHIJKL"[when.month - 1] + "".join(self.rng.choices(letters, k=8))
            if text not in self.receipts:
                self.receipts.add(text)
                return text

    def _customer(self, number: int) -> Customer:
        phone = f"2547{self.rng.randrange(10_000_000, 99_999_999)}"
        name = f"{self.rng.choice(NAMES)} {self.rng.choice(SURNAMES)}"
        return Customer(user_id=f"user-{number:04d}", phone=phone, name=name)

    def add(self, table: str, **values) -> dict:
        row = dict(values)
        self.data.rows[table].append(row)
        return row

    def flag(self, subject_type: str, subject_id: str, name: str, detail: str, when: datetime):
        self.add(
            "payment_flags",
            id=self.uid(),
            subject_type=subject_type,
            subject_id=subject_id,
            flag=name,
            detail=detail,
            created_at=when,
        )

    # times

    def business_time(self, day: int) -> datetime:
        """A time on day `day` of the window, busiest at midday Nairobi time (07:00-21:59); the
        window starts at a Nairobi midnight."""
        hours = list(range(7, 22))
        weights = [2, 4, 6, 7, 8, 8, 7, 7, 6, 6, 5, 5, 4, 3, 2]
        hour = self.rng.choices(hours, weights)[0]
        return self.data.start + timedelta(days=day, hours=hour, seconds=self.rng.randrange(3600))

    def latency(self, median: float) -> float:
        """Whole seconds (so MySQL DATETIME keeps them exactly), log-normal around `median`
        with a long tail."""
        return max(1, round(median * self.rng.lognormvariate(0, 0.8)))

    # payouts

    def payout(
        self,
        when: datetime,
        amount: int,
        customer: Customer,
        attempts: list[Attempt],
        *,
        status: str | None = None,
    ) -> dict:
        """A payout with its attempts, result callbacks and flags, as the service writes them."""
        payout_id, amount_kes = self.uid(), Decimal(amount)
        status = status or PAYOUT_STATUS[attempts[-1].outcome]
        values: dict = {"transaction_id": None, "completed_at": None, "paid_amount": None}
        moment, ocid, conversation = when, None, None
        for number, attempt in enumerate(attempts, start=1):
            ocid = self.uid()
            answered = attempt.outcome in ("paid", "failed", "accepted", "timeout")
            conversation = f"AG_{moment:%Y%m%d}_{self.uid().replace('-', '')[:20]}"
            conversation = conversation if answered else None
            sent = moment + timedelta(seconds=self.rng.randint(1, 3))
            result_at = sent + timedelta(seconds=attempt.latency)
            self.add(
                "b2c_payout_attempts",
                id=self.uid(),
                payout_id=payout_id,
                attempt_no=number,
                originator_conversation_id=ocid,
                conversation_id=conversation,
                status=ATTEMPT_STATUS[attempt.outcome],
                response_code="0" if answered else None,
                error_code=attempt.code if attempt.outcome in ("failed", "rejected") else None,
                created_at=moment,
                sent_at=None if attempt.outcome == "sending" else sent,
                answered_at=result_at if answered else None,
            )
            keys = {"ocid": ocid, "conversation": conversation, "payout_id": payout_id}
            if attempt.outcome in ("paid", "failed"):
                values |= self.result(attempt, amount_kes, customer, result_at, **keys)
                if attempt.outcome == "paid":  # the service records each attempt's evidence
                    self.data.rows["b2c_payout_attempts"][-1]["receipt"] = values["transaction_id"]
            elif attempt.outcome == "timeout":
                self.timeout(result_at, **keys)
            moment = result_at + timedelta(seconds=self.rng.randrange(60, 600))
        reason_code = values.get("reason_code")
        if attempts[-1].outcome == "rejected":
            reason_code = attempts[-1].code
        row = self.add(
            "b2c_payments",
            id=payout_id,
            user_id=customer.user_id,
            user_type="trainer",
            phone_number=customer.phone,
            amount=amount_kes,
            reference_id=f"payout_ref_{self.uid().replace('-', '')}",
            transaction_id=values["transaction_id"] if status == "completed" else None,
            status=status,
            error_description=values.get("error_description"),
            reason_code=reason_code,
            initiated_at=when,
            completed_at=values["completed_at"] if status == "completed" else None,
            updated_at=moment,
            originator_conversation_id=ocid,
            conversation_id=conversation,
            command_id="BusinessPayment",
            reason="session payout",
            description="Payout",
            result_desc=values.get("result_desc"),
            paid_amount=values["paid_amount"] if status == "completed" else None,
            receiver_name=customer.name if status == "completed" else None,
            attempt_count=len(attempts),
            check_count=0,
        )
        if status == "completed" and values["paid_amount"] != amount_kes:
            detail = f"amount mismatch: {amount_difference(amount_kes, values['paid_amount'])}"
            self.flag("payout", payout_id, "amount_mismatch", detail, values["completed_at"])
        return row

    def result(self, attempt, amount, customer, received, *, ocid, conversation, payout_id):
        """The result callback(s) of an attempt; the payout columns the result sets."""
        paid = attempt.outcome == "paid"
        code = "0" if paid else attempt.code
        receipt = self.receipt(received) if paid else None
        paid_amount = (attempt.paid or amount) if paid else None
        desc = "The service request is processed successfully." if paid else meaning(code, "b2c")
        deliveries = [received]
        if attempt.redelivered:
            deliveries.append(received + timedelta(seconds=self.rng.randrange(60, 300)))
        for index, moment in enumerate(deliveries):
            self.add(
                "b2c_payment_callbacks",
                id=self.uid(),
                # the unique receipt is kept once; a redelivery keeps it in raw_response only
                transaction_id=receipt if index == 0 else None,
                originator_conversation_id=ocid,
                conversation_id=conversation,
                result_code=integer_code(code),
                result_code_text=code,
                result_description=desc,
                result_type="0",
                transaction_amount=paid_amount,
                receiver_phone=customer.phone if paid else None,
                receiver_name=f"{customer.phone} - {customer.name}" if paid else None,
                payout_id=payout_id,
                kind="result",
                outcome="applied" if index == 0 else "duplicate",
                received_at=moment,
            )
        if paid:
            return {
                "transaction_id": receipt,
                "completed_at": received,
                "paid_amount": paid_amount,
                "reason_code": "0",
                "result_desc": desc,
                "error_description": None,
            }
        return {"reason_code": code, "error_description": desc, "result_desc": desc}

    def timeout(self, received, *, ocid, conversation, payout_id):
        self.add(
            "b2c_payment_callbacks",
            id=self.uid(),
            originator_conversation_id=ocid,
            conversation_id=conversation,
            result_description="The request timed out in the queue.",
            payout_id=payout_id,
            kind="timeout",
            outcome="applied",
            received_at=received,
        )

    def status_queries(self, payout: dict, count: int, status: str, when: datetime) -> None:
        attempt = self.data.rows["b2c_payout_attempts"][-1]
        for step in range(1, count + 1):
            asked = when + timedelta(minutes=5 * 2**step)
            self.add(
                "status_queries",
                id=self.uid(),
                payout_id=payout["id"],
                attempt_id=attempt["id"],
                step=step,
                originator_conversation_id=payout["originator_conversation_id"],
                status=status,
                result_code="500.001.1001" if status == "failed" else None,
                result_desc="Unable to resolve the transaction" if status == "failed" else None,
                requested_at=asked,
                answered_at=asked + timedelta(seconds=4) if status == "failed" else None,
            )

    def everyday_payout(self, when: datetime) -> None:
        amount = min(25_000, max(100, round(self.rng.lognormvariate(6.7, 0.7) / 10) * 10))
        customer = self.rng.choice(self.customers)
        roll = self.rng.random()
        paid = Attempt("paid", latency=self.latency(8))
        if roll < 0.88:
            attempts = [paid]
        elif roll < 0.95:
            code = self.rng.choices(list(B2C_FAILURES), list(B2C_FAILURES.values()))[0]
            attempts = [Attempt("failed", code=code, latency=self.latency(6))]
        else:  # a retryable failure, then a second attempt
            first = Attempt("failed", code=self.rng.choice(B2C_RETRYABLE), latency=self.latency(6))
            second = paid if self.rng.random() < 0.75 else first
            attempts = [first, second]
        self.payout(when, amount, customer, attempts)

    def planted_payouts(self) -> None:
        """One or more of every payout anomaly and every payout status."""
        start, end, pick = self.data.start, self.data.end, self.rng.choice
        mid = start + (end - start) / 2
        # amount_mismatch (and a statement_amount_mismatch: the statement shows what was paid)
        self.payout(
            mid + timedelta(hours=2),
            1500,
            pick(self.customers),
            [Attempt("paid", paid=Decimal(1000), latency=11)],
        )
        # duplicate_callback: the same result delivered twice
        self.payout(
            mid + timedelta(hours=4),
            750,
            pick(self.customers),
            [Attempt("paid", latency=7, redelivered=True)],
        )
        # possible_double_payout: one customer, one amount, twice within two hours
        twice = pick(self.customers)
        for hours in (5, 7):
            self.payout(mid + timedelta(hours=hours), 2500, twice, [Attempt("paid", latency=9)])
        # status_conflict: failed, then a status query result says it was paid after all
        conflict = self.payout(
            start + timedelta(days=1, hours=9),
            1000,
            pick(self.customers),
            [Attempt("failed", code="17", latency=30)],
        )
        self.late_success(conflict)
        # stale_pending: accepted, never answered; queue timeouts and unanswered requests
        for hours in (96, 26, 5):
            self.payout(
                end - timedelta(hours=hours), 500, pick(self.customers), [Attempt("accepted")]
            )
        timed_out = self.payout(
            end - timedelta(hours=30),
            2000,
            pick(self.customers),
            [Attempt("timeout", latency=1800)],
        )
        self.status_queries(timed_out, 1, "sent", end - timedelta(hours=29))
        self.payout(end - timedelta(hours=3), 300, pick(self.customers), [Attempt("unknown")])
        # a pending payout still inside the stale threshold at the end of the window
        self.payout(end - timedelta(minutes=10), 200, pick(self.customers), [Attempt("accepted")])
        # submitting: the process stopped while sending
        self.payout(end - timedelta(hours=2), 1000, pick(self.customers), [Attempt("sending")])
        # review: unknown, and the status queries could not resolve it
        for hours in (50, 20):
            review = self.payout(
                end - timedelta(hours=hours),
                5000,
                pick(self.customers),
                [Attempt("timeout", latency=1800)],
                status="review",
            )
            self.status_queries(review, 3, "failed", end - timedelta(hours=hours))
        # failed: rejected by Daraja before it was accepted (no result; legacy reason_code)
        self.payout(
            start + timedelta(days=2, hours=8),
            250,
            pick(self.customers),
            [Attempt("rejected", code="400.002.02")],
        )

    def planted_statement_anomalies(self) -> None:
        """A payout paid by both its attempts (both receipts withdrawn), one payout row listed
        twice, and one payout reversed. Drawn after everything else, so the rest of the data
        set is what it was before these were planted."""
        mid = self.data.start + (self.data.end - self.data.start) / 2
        customer = self.rng.choice(self.customers)
        twice = self.payout(
            mid + timedelta(hours=9), 1200, customer, [Attempt("paid"), Attempt("paid")]
        )
        for attempt in self.data.rows["b2c_payout_attempts"][-2:]:
            self.data.statement.append(
                StatementLine(
                    attempt["receipt"],
                    attempt["answered_at"],
                    withdrawn=twice["amount"],
                    other_party=customer.phone,
                )
            )
        early = self.data.end - timedelta(hours=3)  # so the reversal falls inside the window
        payouts = [
            line
            for line in self.data.statement[:-2]
            if line.reason == PAYOUT_REASON and line.completed_at < early
        ]
        listed_twice, reversed_ = self.rng.sample(payouts, 2)
        self.overcharge([line for line in payouts if line not in (listed_twice, reversed_)])
        self.data.statement.append(listed_twice)
        self.data.statement.append(
            StatementLine(
                reversed_.receipt,
                reversed_.completed_at + timedelta(hours=2),
                paid_in=reversed_.withdrawn,
                reason=REVERSAL_REASON,
                other_party=reversed_.other_party,
            )
        )

    def overcharge(self, payouts: list[StatementLine]) -> None:
        """One payout row, of an amount the tariff charges, charged OVERCHARGE too much."""
        charged = [line for line in payouts if tariff_charge(line.withdrawn, line.completed_at)]
        chosen = self.rng.choice(charged)
        index = self.data.statement.index(chosen)
        self.data.statement[index] = replace(chosen, overcharged=OVERCHARGE)

    def late_success(self, payout: dict) -> None:
        """A Transaction Status result saying the payout was paid, after it was marked failed."""
        received = payout["updated_at"] + timedelta(minutes=47)
        receipt = self.receipt(received)
        customer = next(c for c in self.customers if c.phone == payout["phone_number"])
        self.add(
            "b2c_payment_callbacks",
            id=self.uid(),
            transaction_id=receipt,
            originator_conversation_id=payout["originator_conversation_id"],
            conversation_id=payout["conversation_id"],
            result_code=0,
            result_code_text="0",
            result_description="The service request is processed successfully.",
            result_type="0",
            transaction_amount=payout["amount"],
            receiver_phone=customer.phone,
            payout_id=payout["id"],
            kind="status",
            outcome="conflict",
            received_at=received,
        )
        detail = f"success result (receipt {receipt}) for attempt 1 but the payout is failed"
        self.flag("payout", payout["id"], "status_conflict", detail, received)
        self.data.statement.append(
            StatementLine(receipt, received, withdrawn=payout["amount"], other_party=customer.phone)
        )

    def orphan_result(self) -> None:
        """A paid result for an OriginatorConversationID no payout or attempt has."""
        received = self.data.start + timedelta(days=3, hours=11, minutes=17)
        receipt, callback_id = self.receipt(received), self.uid()
        self.add(
            "b2c_payment_callbacks",
            id=callback_id,
            transaction_id=receipt,
            originator_conversation_id=self.uid(),
            conversation_id=f"AG_{received:%Y%m%d}_ORPHAN{self.rng.randrange(10**9)}",
            result_code=0,
            result_code_text="0",
            result_description="The service request is processed successfully.",
            result_type="0",
            transaction_amount=Decimal(350),
            receiver_phone="254700000001",
            kind="result",
            outcome="orphan",
            received_at=received,
        )
        self.flag("b2c_callback", callback_id, "orphan_callback", "matches no payout", received)
        self.data.statement.append(
            StatementLine(receipt, received, withdrawn=Decimal(350), other_party="254700000001")
        )

    # collections

    def stk(self, when: datetime, amount: int, customer: Customer, outcome: str, **extra) -> dict:
        """An STK Push collection and its callback, as the service writes them."""
        payment_id = self.uid()
        local = nairobi(when)
        checkout = f"ws_CO_{local:%d%m%Y%H%M%S}{self.rng.randrange(10**6):06d}{customer.phone}"
        merchant = f"{self.rng.randrange(10000, 99999)}-{self.rng.randrange(10**7, 10**8)}-1"
        amount_kes = Decimal(amount)
        row = self.add(
            "payments",
            id=payment_id,
            user_id=customer.user_id,
            booking_id=f"booking-{self.rng.randrange(10**6):06d}",
            amount=amount_kes,
            status="pending",
            method="mpesa",
            created_at=when,
            updated_at=when,
            checkout_request_id=checkout,
            merchant_request_id=merchant,
            phone_number=customer.phone,
            account_reference="SESSION",
            description="Session payment",
            query_count=0,
            next_query_at=when + timedelta(seconds=60),
        )
        if outcome in ("pending", "unknown"):
            row["status"] = outcome
            if outcome == "unknown":
                row["checkout_request_id"] = row["merchant_request_id"] = None
                row["error_message"] = "outcome unknown: read timeout"
            return row
        if outcome == "expired":
            desc = "expired: no final answer from M-Pesa within 600 s"
            moment = when + timedelta(minutes=10, seconds=self.rng.randrange(30, 90))
            row.update(status="failed", result_desc=desc, updated_at=moment, query_count=4)
            return row
        median = {"0": 25, "1032": 12, "1037": 45, "1019": 70}.get(outcome, 8)
        received = when + timedelta(seconds=self.latency(median))
        paid = extra.get("paid", amount_kes) if outcome == "0" else None
        receipt = self.receipt(received) if outcome == "0" else None
        desc = "The service request is processed successfully." if outcome == "0" else None
        desc = desc or meaning(outcome, "stk")
        self.add(
            "stk_callbacks",
            id=self.uid(),
            checkout_request_id=checkout,
            merchant_request_id=merchant,
            payment_id=payment_id,
            result_code=outcome,
            result_desc=desc,
            amount=paid,
            mpesa_receipt=receipt,
            phone_number=customer.phone if outcome == "0" else None,
            transaction_date=received if outcome == "0" else None,
            outcome="applied",
            received_at=received,
        )
        row.update(result_code=outcome, result_desc=desc, updated_at=received)
        if outcome != "0":
            row["status"] = "failed"
            return row
        row.update(
            status="completed" if paid == amount_kes else "amount_mismatch",
            paid_amount=paid,
            mpesa_receipt=receipt,
            transaction_reference=receipt,
            completed_at=received,
        )
        if paid != amount_kes:
            flag = "underpaid" if paid < amount_kes else "overpaid"
            self.flag("payment", payment_id, flag, amount_difference(amount_kes, paid), received)
        return row

    def everyday_stk(self, when: datetime) -> None:
        outcome = self.rng.choices(list(STK_OUTCOMES), list(STK_OUTCOMES.values()))[0]
        self.stk(when, self.rng.choice(STK_AMOUNTS), self.rng.choice(self.customers), outcome)

    def planted_stk(self) -> None:
        start, end, pick = self.data.start, self.data.end, self.rng.choice
        for day, amount, paid in ((1, 1000, 900), (4, 2000, 1500), (5, 500, 550)):
            when = start + timedelta(days=day, hours=10, minutes=day * 7)
            self.stk(when, amount, pick(self.customers), "0", paid=Decimal(paid))
        self.stk(end - timedelta(hours=6), 800, pick(self.customers), "unknown")
        self.stk(end - timedelta(minutes=4), 300, pick(self.customers), "pending")

    # C2B: payments customers made to the paybill themselves

    def c2b(self, when: datetime, amount: int, bill_ref: str, *, source="confirmation") -> dict:
        """A C2B payment as the service stores it (source confirmation, or pull: its
        confirmation never came and Pull Transactions found it, flagged)."""
        customer = self.rng.choice(self.customers)
        masked = f"{customer.phone[:4]} ***** {customer.phone[-3:]}"
        first, _, last = customer.name.partition(" ")
        received = when + timedelta(seconds=self.rng.randint(1, 5))
        if source == "pull":
            received = when + timedelta(minutes=self.rng.randrange(20, 360))
        row = self.add(
            "c2b_payments",
            id=self.uid(),
            trans_id=self.receipt(when),
            transaction_type="Pay Bill" if source == "confirmation" else "c2b-pay-bill-debit",
            kind="paybill",
            amount=Decimal(amount),
            msisdn=masked,
            bill_ref_number=bill_ref,
            business_short_code=SHORTCODE,
            first_name=first if source == "confirmation" else None,
            last_name=last if source == "confirmation" else None,
            trans_time=when,
            source=source,
            outcome="recorded",
            received_at=received,
            confirmed_at=received if source == "confirmation" else None,
        )
        if source == "pull":
            detail = f"C2B payment {row['trans_id']} found by Pull Transactions"
            self.flag("c2b_payment", row["id"], "confirmation_missed", detail, received)
        return row

    def c2b_line(self, row: dict) -> StatementLine:
        return StatementLine(
            row["trans_id"],
            row["trans_time"],
            paid_in=row["amount"],
            reason=C2B_REASON,
            other_party=row["msisdn"],
            account=row["bill_ref_number"],
        )

    def c2b_traffic(self) -> None:
        """Everyday C2B payments naming a booking, each on the statement; two found by Pull
        Transactions; and the planted C2B findings. Drawn after everything else, so the rest of
        the data set is what it was before C2B was added."""
        bookings = [p["booking_id"] for p in self.data.rows["payments"]]
        days = (self.data.end - self.data.start).days
        for day in range(days):
            for _ in range(self.rng.randint(C2B_PER_DAY * 4 // 5, C2B_PER_DAY * 6 // 5)):
                when = self.business_time(day)
                row = self.c2b(when, self.rng.choice(STK_AMOUNTS), self.rng.choice(bookings))
                self.data.statement.append(self.c2b_line(row))
        start = self.data.start
        for day, amount in ((2, 1800), (5, 650)):
            when = start + timedelta(days=day, hours=8, minutes=41)
            pulled = self.c2b(when, amount, self.rng.choice(bookings), source="pull")
            self.data.statement.append(self.c2b_line(pulled))
        # c2b_missing_from_statement: confirmed, but the statement has no such receipt
        self.c2b(start + timedelta(days=3, hours=12), 2200, self.rng.choice(bookings))
        # c2b_unknown_bill_ref: the customer typed a bill reference that names no booking
        typo = self.c2b(start + timedelta(days=4, hours=7), 900, "BOOKNG-00017")
        self.data.statement.append(self.c2b_line(typo))
        # c2b_without_confirmation: paid (the statement shows it), never confirmed nor pulled
        when = start + timedelta(days=1, hours=14, minutes=5)
        self.data.statement.append(
            StatementLine(
                self.receipt(when),
                when,
                paid_in=Decimal(3000),
                reason=C2B_REASON,
                other_party="2547 ***** 455",
                account=self.rng.choice(bookings),
            )
        )

    # payouts above the approval threshold (maker-checker)

    def payouts_above_approval(self) -> None:
        """Three payouts above APPROVAL_ABOVE, written ahead with no attempt as payouts.py
        writes them: one still awaiting approval, one rejected by another operator key, one
        expired by the expiry job; none was sent. Drawn after everything else, so the rest of
        the data set is what it was before they were added."""
        start, end = self.data.start, self.data.end
        self.awaiting_approval(end - timedelta(hours=5), 60_000)
        rejected = self.awaiting_approval(start + timedelta(days=2, hours=10), 75_000)
        reason = "not in this month's payroll"
        self.payout_decided(
            rejected,
            "rejected",
            rejected["initiated_at"] + timedelta(minutes=self.rng.randrange(20, 200)),
            CHECKER,
            reason,
            f"rejected by {CHECKER}: {reason}",
        )
        expired = self.awaiting_approval(start + timedelta(days=1, hours=15), 120_000)
        note = (
            f"not approved within APPROVAL_EXPIRES_HOURS ({APPROVAL_EXPIRES_HOURS} h): never sent"
        )
        when = expired["initiated_at"] + timedelta(hours=APPROVAL_EXPIRES_HOURS, minutes=1)
        self.payout_decided(expired, "expired", when, "system", note, note)

    def awaiting_approval(self, when: datetime, amount: int) -> dict:
        customer = self.rng.choice(self.customers)
        row = self.add(
            "b2c_payments",
            id=self.uid(),
            user_id=customer.user_id,
            user_type="trainer",
            phone_number=customer.phone,
            amount=Decimal(amount),
            reference_id=f"payout_ref_{self.uid().replace('-', '')}",
            status="awaiting_approval",
            reason="session payout",
            description="Payout",
            command_id="BusinessPayment",
            attempt_count=0,
            check_count=0,
            initiated_at=when,
            updated_at=when,
            created_by=MAKER,
        )
        note = f"above APPROVAL_ABOVE {APPROVAL_ABOVE:,}: awaits approval"
        self.payout_audit(row, MAKER, "created", None, "awaiting_approval", note, when)
        return row

    def payout_decided(self, row, status, when, actor, note, description) -> None:
        """A payout awaiting approval ended `rejected` or `expired`, audited."""
        row.update(status=status, updated_at=when, error_description=description)
        self.payout_audit(row, actor, status, "awaiting_approval", status, note, when)

    def payout_audit(self, row, actor, action, before, after, note, when) -> None:
        self.add(
            "payout_audit",
            id=self.uid(),
            payout_id=row["id"],
            actor=actor,
            action=action,
            status_before=before,
            status_after=after,
            note=note,
            created_at=when,
        )

    # reversals the service made (refunds of collections)

    def service_reversals(self) -> None:
        """STK collections and one C2B payment an operator reversed through the service, each
        with the statement's reversal row (Withdrawn, Linked Transaction ID the receipt undone):
        they reconcile clean. Drawn after everything else, so the rest of the data set is what
        it was before reversals were added."""
        on_statement = {line.receipt for line in self.data.statement}
        latest = self.data.end - timedelta(days=2)  # so each reversal falls inside the window
        stk = [
            row
            for row in self.data.rows["payments"]
            if row["status"] == "completed"
            and row["mpesa_receipt"] in on_statement
            and row["completed_at"] < latest
        ]
        c2b = [
            row
            for row in self.data.rows["c2b_payments"]
            if row["source"] == "confirmation"
            and row["trans_id"] in on_statement
            and row["trans_time"] < latest
        ]
        for row in self.rng.sample(stk, STK_REVERSED):
            self.reversal("stk", row, row["mpesa_receipt"], row["paid_amount"], row["completed_at"])
        row = self.rng.choice(c2b)
        self.reversal("c2b", row, row["trans_id"], row["amount"], row["received_at"])

    def reversal(self, kind: str, row: dict, original: str, amount: Decimal, paid_at) -> None:
        """One completed reversal of a collection, as reversals.py writes it: the attempt, its
        result callback, the audit rows, the collection marked reversed with the reversal's
        receipt; and the statement's reversal row."""
        reversal_id, ocid = self.uid(), self.uid()
        asked = paid_at + timedelta(hours=self.rng.randrange(2, 30), seconds=self.rng.randrange(60))
        sent = asked + timedelta(seconds=self.rng.randint(1, 3))
        done = sent + timedelta(seconds=self.latency(8))
        receipt = self.receipt(done)
        conversation = f"AG_{done:%Y%m%d}_{self.uid().replace('-', '')[:20]}"
        status_before = row["status"] if kind == "stk" else row["outcome"]
        reason = self.rng.choice(REFUND_REASONS)
        self.add(
            "reversals",
            id=reversal_id,
            payment_kind=kind,
            payment_id=row["id"],
            attempt_no=1,
            status="completed",
            amount=amount,
            original_receipt=original,
            receiver_party=SHORTCODE,
            reason=reason,
            requested_by=REFUND_OPERATOR,
            originator_conversation_id=ocid,
            conversation_id=conversation,
            receipt=receipt,
            result_code="0",
            result_desc="The service request is processed successfully.",
            check_count=0,
            created_at=asked,
            sent_at=sent,
            completed_at=done,
            updated_at=done,
        )
        self.add(
            "reversal_callbacks",
            id=self.uid(),
            reversal_id=reversal_id,
            kind="result",
            result_code="0",
            result_desc="The service request is processed successfully.",
            originator_conversation_id=ocid,
            conversation_id=conversation,
            transaction_id=receipt,
            outcome="applied",
            received_at=done,
        )
        audit = {"payment_kind": kind, "payment_id": row["id"], "status_before": status_before}
        note = f"reversal attempt 1 of {int(amount):,}: {reason}"
        self.add(
            "collection_audit",
            id=self.uid(),
            actor=REFUND_OPERATOR,
            action="reversal_requested",
            status_after=status_before,
            note=note,
            created_at=asked,
            **audit,
        )
        self.add(
            "collection_audit",
            id=self.uid(),
            actor="system",
            action="reversed",
            status_after="reversed",
            receipt=receipt,
            note=f"reversed by {receipt} (attempt 1)",
            created_at=done,
            **audit,
        )
        if kind == "stk":
            row.update(status="reversed", updated_at=done)
            other_party = row["phone_number"]
        else:
            row.update(reversed_at=done, reversal_receipt=receipt)
            other_party = row["msisdn"]
        self.data.statement.append(
            StatementLine(
                receipt,
                done,
                withdrawn=amount,
                reason=REVERSAL_REASON,
                other_party=other_party,
                linked=original,
            )
        )

    # statement

    def statement_lines(self) -> None:
        """The completed payouts and collections the M-Pesa account shows, with the planted
        differences: one of each left out, one payout amount changed, two unknown receipts."""
        rows = self.data.rows
        completed = [p for p in rows["b2c_payments"] if p["status"] == "completed"]
        collected = [p for p in rows["payments"] if p.get("mpesa_receipt")]
        everyday = [p for p in completed if p["amount"] == p["paid_amount"]]
        omitted = {
            self.rng.choice(everyday)["transaction_id"],
            self.rng.choice(collected)["mpesa_receipt"],
        }
        changed = self.rng.choice([p for p in everyday if p["transaction_id"] not in omitted])
        for payout in completed:
            receipt = payout["transaction_id"]
            if receipt in omitted:
                continue
            amount = payout["paid_amount"] + (Decimal(10) if payout is changed else 0)
            other = f"{payout['phone_number']} - {payout['receiver_name']}"
            self.data.statement.append(
                StatementLine(receipt, payout["completed_at"], withdrawn=amount, other_party=other)
            )
        for payment in collected:
            if payment["mpesa_receipt"] in omitted:
                continue
            self.data.statement.append(
                StatementLine(
                    payment["mpesa_receipt"],
                    payment["completed_at"],
                    paid_in=payment["paid_amount"],
                    reason=COLLECTION_REASON,
                    other_party=payment["phone_number"],
                )
            )
        middle = self.data.start + (self.data.end - self.data.start) / 2
        for hours, paid_in, withdrawn in ((3, 0, 4200), (8, 1250, 0)):
            when = middle + timedelta(hours=hours, minutes=13)
            self.data.statement.append(
                StatementLine(
                    self.receipt(when),
                    when,
                    paid_in=Decimal(paid_in),
                    withdrawn=Decimal(withdrawn),
                    reason=COLLECTION_REASON if paid_in else PAYOUT_REASON,
                    other_party="254799000000",
                )
            )

    def run(self) -> DemoData:
        days = (self.data.end - self.data.start).days
        for day in range(days):
            for _ in range(self.rng.randint(PAYOUTS_PER_DAY * 4 // 5, PAYOUTS_PER_DAY * 6 // 5)):
                self.everyday_payout(self.business_time(day))
            for _ in range(self.rng.randint(STK_PER_DAY * 4 // 5, STK_PER_DAY * 6 // 5)):
                self.everyday_stk(self.business_time(day))
        self.planted_payouts()
        self.orphan_result()
        self.planted_stk()
        self.statement_lines()
        self.planted_statement_anomalies()
        self.c2b_traffic()
        self.service_reversals()
        self.payouts_above_approval()
        return self.data


def window(days: int, end: date | None = None) -> tuple[datetime, datetime]:
    """[start, end) in naive UTC: `days` Nairobi days ending at the Nairobi midnight that
    starts `end` (default: today in Nairobi)."""
    end = end or datetime.now(NAIROBI).date()
    end_time = datetime(end.year, end.month, end.day, tzinfo=NAIROBI).astimezone(UTC)
    end_time = end_time.replace(tzinfo=None)
    return end_time - timedelta(days=days), end_time


def generate(seed: int = DEFAULT_SEED, days: int = DEFAULT_DAYS, end: date | None = None):
    """The rows and statement lines of `days` Nairobi days ending when `end` begins (default
    today), deterministic for a seed and an end date."""
    if days < 2:
        raise DemoError(f"--days must be at least 2, not {days}")
    return _Generator(seed, *window(days, end)).run()


# -- the statement file ---------------------------------------------------------------------------


def tariff_charge(amount: Decimal, when: datetime) -> Decimal | None:
    """The shipped tariff's charge of a B2C payout of `amount` completed at `when` (naive UTC);
    None where the tariff does not know it."""
    quote = shipped_tariff().quote(
        np.array([int(amount * 100)], dtype=np.int64),
        np.array([nairobi(when).date()], dtype="datetime64[D]"),
        np.array(["registered"], dtype=object),
    )
    cents = int(quote.cents[0])
    return None if cents < 0 else Decimal(cents).scaleb(-2)


def statement_rows(data: DemoData) -> tuple[list[list[str]], list[dict[str, str]]]:
    """The header block and the rows (newest first, as the portal exports), with running
    balances, charge rows, a daily float top-up, and the planted differences applied."""
    lines = [line for line in data.statement if line.completed_at < data.end]
    for day in range((data.end - data.start).days):
        when = data.start + timedelta(days=day, hours=6, minutes=30)  # 06:30 Nairobi
        receipt = f"TFLOAT{day:02d}{data.start:%m%d}"
        lines.append(StatementLine(receipt, when, paid_in=Decimal(150_000), reason=FUNDING_REASON))
    lines.sort(key=lambda line: (line.completed_at, line.receipt))
    balance, paid_total, withdrawn_total = OPENING_BALANCE, Decimal(0), Decimal(0)
    rows = []
    for line in lines:
        movements = [(line.reason, line.paid_in, line.withdrawn)]
        if line.withdrawn and line.reason == PAYOUT_REASON:
            charge = (tariff_charge(line.withdrawn, line.completed_at) or 0) + line.overcharged
            if charge:
                movements.append((CHARGE_REASON, Decimal(0), charge))
        for reason, paid_in, withdrawn in movements:
            balance += paid_in - withdrawn
            paid_total += paid_in
            withdrawn_total += withdrawn
            rows.append(_statement_row(line, reason, paid_in, withdrawn, balance))
    rows.reverse()
    header = _header_block(data, balance, paid_total, withdrawn_total + TOTAL_WITHDRAWN_ERROR)
    return header, rows


def _statement_row(line, reason, paid_in, withdrawn, balance) -> dict[str, str]:
    local = f"{nairobi(line.completed_at):%d-%m-%Y %H:%M:%S}"
    details = {
        PAYOUT_REASON: f"Business Payment to {line.other_party}",
        CHARGE_REASON: "Business Payment Charge",
        COLLECTION_REASON: f"Pay Utility from {line.other_party}",
        C2B_REASON: f"Pay Bill Online from {line.other_party}",
        FUNDING_REASON: "Funds transfer from the organisation settlement account",
        REVERSAL_REASON: f"Reversal of {line.linked or line.receipt}",
    }[reason]
    return {
        "Receipt No.": line.receipt,
        "Completion Time": local,
        "Initiation Time": local,
        "Details": details,
        "Transaction Status": "Completed",
        "Paid In": f"{paid_in:,.2f}" if paid_in else "",
        "Withdrawn": f"{-withdrawn:,.2f}" if withdrawn else "",
        "Balance": f"{balance:,.2f}",
        "Balance Confirmed": "true",
        "Reason Type": reason,
        "Other Party Info": line.other_party,
        "Linked Transaction ID": line.linked,
        "A/C No.": "SESSION" if reason == COLLECTION_REASON else line.account,
    }


def _header_block(data: DemoData, closing, paid_in, withdrawn) -> list[list[str]]:
    start = f"{nairobi(data.start):%d-%m-%Y %H:%M:%S}"
    end = f"{nairobi(data.end) - timedelta(seconds=1):%d-%m-%Y %H:%M:%S}"
    reported = f"{nairobi(data.end) + timedelta(hours=8):%d-%m-%Y %H:%M:%S}"
    return [
        ["Account Holder:", "DEMO TRAINERS LTD"],
        ["Short Code:", SHORTCODE],
        ["Account:", "Utility Account"],
        ["Time Period:", f"From {start}", "To", end],
        ["Operator:", "demo", f"Date of Report: {reported}"],
        [
            "Opening Balance:",
            f"{OPENING_BALANCE:,.2f}",
            "Closing Balance:",
            f"{closing:,.2f}",
            "Available Balance:",
            f"{closing:,.2f}",
            "Total Paid In:",
            f"{paid_in:,.2f}",
            "Total Withdrawn:",
            f"{withdrawn:,.2f}",
        ],
    ]


def write_statement(data: DemoData, path: str | Path) -> int:
    """Write the statement CSV; returns the number of entry rows."""
    header, rows = statement_rows(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerows(header)
        writer.writerow(PORTAL_HEADER)
        writer.writerows([row[column] for column in PORTAL_HEADER] for row in rows)
    return len(rows)


# -- the database ---------------------------------------------------------------------------------


def check_database(database_url: str) -> None:
    """Stop with the command to run when the database is missing, not migrated or not empty."""
    url = sa.make_url(database_url)
    shown = url.render_as_string(hide_password=True)
    migrate = f"run `DATABASE_URL='{shown}' python service.py migrate` first"
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if not path or path == ":memory:":
            raise DemoError("demo data needs a SQLite file, e.g. sqlite:///data/demo.db")
        if not Path(path).is_file():
            raise DemoError(f"{path} does not exist yet: {migrate}")
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            missing = sorted(set(DEMO_TABLES) - set(sa.inspect(connection).get_table_names()))
            if missing:
                raise DemoError(f"{shown} is not migrated (no {', '.join(missing)}): {migrate}")
            tables = service_tables(connection)
            used = {
                name: connection.execute(
                    sa.select(sa.func.count()).select_from(tables[name])
                ).scalar_one()
                for name in ("b2c_payments", "payments")
            }
    except sa.exc.SQLAlchemyError as error:
        raise DemoError(f"cannot open {shown}: {type(error).__name__}") from None
    except ModuleNotFoundError as error:
        raise DemoError(f"cannot open {shown}: missing driver {error.name}") from None
    finally:
        engine.dispose()
    if any(used.values()):
        raise DemoError(
            f"{shown} already holds {used['b2c_payments']} payouts and {used['payments']} "
            "payments; demo data goes into an empty database"
        )


def service_tables(connection: sa.Connection) -> dict[str, sa.Table]:
    """DEMO_TABLES as the migrated database declares them."""
    metadata = sa.MetaData()
    metadata.reflect(connection, only=DEMO_TABLES)
    return {name: metadata.tables[name] for name in DEMO_TABLES}


def insert(database_url: str, data: DemoData) -> dict[str, int]:
    """Insert every row in one transaction; returns the row count per table. A table's rows
    name the columns the generator set; the others take the schema's default."""
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            tables = service_tables(connection)
            for name, rows in data.rows.items():
                if rows:
                    columns = dict.fromkeys(key for row in rows for key in row)
                    connection.execute(tables[name].insert(), [columns | row for row in rows])
    finally:
        engine.dispose()
    return {name: len(rows) for name, rows in data.rows.items()}


def write_demo(
    database_url: str,
    statement_path: str | Path,
    *,
    seed: int = DEFAULT_SEED,
    days: int = DEFAULT_DAYS,
    end: date | None = None,
) -> DemoData:
    """Check the database, generate, insert, write the statement; returns the data written."""
    check_database(database_url)
    data = generate(seed, days, end)
    insert(database_url, data)
    write_statement(data, statement_path)
    return data


# -- command line ---------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recon demo-data",
        description="Fill an empty, migrated database and a statement CSV with demo traffic.",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL"),
        help="SQLAlchemy URL of a migrated, empty database (default: $DATABASE_URL)",
    )
    parser.add_argument("--statement", required=True, help="the statement CSV to write")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (7)")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days of traffic (7)")
    parser.add_argument(
        "--end",
        type=date.fromisoformat,
        help="the day after the last day, YYYY-MM-DD, Nairobi (default: today)",
    )
    return parser


def main(argv: list[str]) -> int:
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as stop:
        return 2 if stop.code else 0
    if not args.database_url:
        print("recon demo-data: give --database-url or set DATABASE_URL", file=sys.stderr)
        return 2
    try:
        data = write_demo(
            args.database_url, args.statement, seed=args.seed, days=args.days, end=args.end
        )
    except DemoError as error:
        print(f"recon demo-data: {error}", file=sys.stderr)
        return 2
    shown = sa.make_url(args.database_url).render_as_string(hide_password=True)
    print(
        f"wrote {data.count('b2c_payments')} payouts, {data.count('payments')} STK payments, "
        f"{data.count('c2b_payments')} C2B payments, {data.count('reversals')} reversals and "
        f"{data.count('b2c_payment_callbacks') + data.count('stk_callbacks')} callbacks "
        f"from {data.start:%Y-%m-%d %H:%M} to {data.end:%Y-%m-%d %H:%M} UTC to {shown}\n"
        f"wrote the statement {args.statement}\n"
        f"reconcile it with:\n  python -m recon --database-url '{shown}' "
        f"--statement {args.statement} --as-of {data.end:%Y-%m-%dT%H:%M}Z "
        f'--bill-ref-query "{BILL_REF_QUERY}" --out out/demo'
    )
    return 0
