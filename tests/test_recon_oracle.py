"""An oracle for recon: Hypothesis generates the truth, derives the database and the statement
from it, plants faults, and recon must report exactly the faults planted.

The truth is money that moved on one Nairobi day D (2025-11-05 00:00 to 24:00 Nairobi): B2C
payouts paid on their first attempt, paid after a failed one (code 17), failed for good (2001)
or still open; payouts the old PHP system wrote (old columns only, amounts sometimes text such
as 'KSh 1,000.00', '1 000.00', 'kes 1000'); STK collections; B2C charges; settlement top-ups.
Times fall anywhere in D, on its first and last second and either side of noon; payouts and
collections may start before D and finish inside it. Each payout row on the statement has the
charge row the oracle's own tariff (TARIFF, read by recon from a file written from it) asks of
its amount, 0 meaning none. From the truth come the rows the service
writes (b2c_payments, b2c_payout_attempts, b2c_payment_callbacks, payments) in a copy of one
migrated SQLite file, and the org-portal statement: CSV or XLSX (text or native cells), oldest
or newest row first, with or without its header block, receipts spelled 'tk00 12qz' on one side,
Completed or Success, Withdrawn signed or not, balances and header totals computed from the
rows as written.

Faults planted, each on records of its own, and what recon must report (check, subject, KES at
risk; "-" is none):

| fault | check | subject | at risk |
|---|---|---|---|
| a paid payout's or collection's row left off | missing_from_statement | payout/payment | paid |
| the statement shows another amount | statement_amount_mismatch | payout/payment | the gap |
| a receipt nobody recorded, out or in | unrecorded_statement_entry | statement line | amount |
| a result paying another amount than asked | amount_mismatch | payout | the gap |
| two attempts paid, two receipts | paid_twice | payout | amount |
| a result callback delivered twice | duplicate_callback | payout | - |
| a statement row listed twice | duplicate_receipt | the later line in the file | amount |
| one receipt on two completed payouts | duplicate_receipt | the later-completed | its amount |
| a payout or collection reversed (own or linked receipt) | reversal | payout/payment | reversed |
| a paid payout marked failed | status_conflict | payout | amount |
| a paid result matching no payout | orphan_callback | result | amount |
| a payout failed for good | failed_result | payout | - |
| a payout left pending, submitting or unknown | stale_pending | payout | amount |
| STK paid amount differs from the amount asked | stk_amount_mismatch | payment | the gap |
| a legacy amount nobody can read | unreadable_value | payout | - |
| a statement cut at noon, or without its header | statement_coverage | statement | - |
| the header's Total Withdrawn off | statement_integrity | statement | - |
| two equal payouts to one phone or user | possible_double_payout | the later payout | amount |
| a payout's charge row 7.00 over the tariff | charge_mismatch | payout | 7.00 |
| a payout's charge row left out (the tariff asks one) | charge_mismatch | payout | the charge |
| a payout row left off, its charge row kept | charge_mismatch | the charge's line | the charge |

A statement cut at noon leaves out the rows after it, and recon says nothing of those (a missing
row, a reversal, a duplicate) beyond the coverage finding; without a header the statement's
period is the span of its rows. Balances and header totals always add up, except where the
Total Withdrawn fault says otherwise.

Half the examples are clean (clean records, full header) and must give no finding and exit code
0; the other half add each fault with probability one half, so shrinking keeps only the faults
a failure needs. Charge faults are due only when the statement shows some charge row (without
any, recon says charges were not checked). Findings are compared as a multiset of (check,
subject, at risk), no money at risk counting as 0.00. The three defects the oracle found are
pinned at the end of the file as ordinary tests. RECON_ORACLE_EXAMPLES sets the number of
examples (30).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st
from openpyxl import Workbook

import service
from recon.api import build_report
from recon.statement import PORTAL_HEADER
from tests.recon_support import (
    CHARGE_REASON,
    PAYOUT_REASON,
    attempt,
    balanced_statement,
    entry,
    header_block,
    legacy_payout,
    legacy_result,
    nairobi,
    new_payout,
    new_result,
    seed,
    statement_csv,
    write_statement,
)

EXAMPLES = int(os.environ.get("RECON_ORACLE_EXAMPLES", "30"))
SINCE = datetime(2025, 11, 4, 21)  # 05-11-2025 00:00:00 Nairobi
UNTIL = SINCE + timedelta(days=1)
LAST = UNTIL - timedelta(seconds=1)
NOON = datetime(2025, 11, 5, 8, 59, 59)  # 11:59:59 Nairobi: where a short statement ends
AS_OF = datetime(2025, 11, 6, 3)
DAY = 86_400
NAIROBI_HOURS = timedelta(hours=3)
NOTHING = Decimal("0.00")  # what a finding without money at risk counts as

COLLECTION_REASON = "Pay Utility"
TOP_UP_REASON = "Organization Settlement Account to Utility Account transfer of funds"
REVERSAL_REASON = "Reversal"
AMOUNTS = tuple(Decimal(value) for value in ("10", "100", "1000", "1500", "25000", "250000"))
OTHER_AMOUNTS = (*AMOUNTS, Decimal("999.99"), Decimal("1000.01"))
# The oracle's tariff: (the top of each band, whole shillings included; its charge), from 1.
TARIFF = (
    (100, Decimal("0")),
    (1500, Decimal("5")),
    (20_000, Decimal("9")),
    (250_000, Decimal("12")),
)
CHARGE_OVER = Decimal("7.00")  # how far a planted charge is off
LEADS = tuple(timedelta(seconds=seconds) for seconds in (3, 45, 600, 7_200, 30_000))
FOLLOW_UPS = frozenset({"callback_twice", "listed_twice", "reversed", "reversed_linked"})


# -- the truth ---------------------------------------------------------------------------------


@dataclass
class Record:
    """One piece of the truth and the fault planted on it (None: none). `other` is the second
    amount a fault or a pair needs; `variant` the fault's flavour; `times` its events in order."""

    kind: str
    fault: str | None = None
    shape: str = "paid"  # paid (first attempt) | retried (after code 17) | legacy (PHP rows)
    amount: Decimal = Decimal("1000")
    other: Decimal = Decimal("100")
    lead: timedelta = timedelta(seconds=45)  # from initiation to the first event
    spelling: str = "same"  # same | database | statement: the side that writes 'tk00 12qz'
    written: str = "number"  # how a legacy amount is written
    variant: str = ""
    times: list[datetime] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    """How the statement is written."""

    form: str  # csv | xlsx | xlsx-native (numbers and date cells instead of text)
    newest_first: bool
    header: str  # full | short (cut at noon) | none
    total_off: Decimal | None  # the header's Total Withdrawn this much too high
    status: str
    negative_withdrawn: bool
    opening: Decimal


@dataclass
class Scenario:
    """One example: the truth with its faults, and how its statement is written."""

    records: list[Record]
    layout: Layout


def record(kind, *, plans=((None, ""),), shapes=("paid",)):
    """Records of one kind; `plans` are the (fault, variant) pairs to choose from."""
    return st.builds(
        planned,
        kind=st.just(kind),
        plan=st.sampled_from(plans),
        shape=st.sampled_from(shapes),
        amount=st.sampled_from(AMOUNTS),
        other=st.sampled_from(OTHER_AMOUNTS),
        lead=st.sampled_from(LEADS),
        spelling=st.sampled_from(("same", "database", "statement")),
        written=st.sampled_from(("number", "KSh", "spaced", "kes")),
    )


def planned(kind, plan, **fields) -> Record:
    fault, variant = plan
    made = Record(kind, fault=fault, variant=variant, **fields)
    if made.other == made.amount:
        made.other = OTHER_AMOUNTS[-1]
    return made


def variants(*names: str) -> tuple[tuple[None, str], ...]:
    return tuple((None, name) for name in names)


PAYOUT_SHAPES = ("paid", "retried", "legacy")
# Fault -> its variants, for paid payouts and for collections.
PAYOUT_FAULTS = {
    "left_out": ("", "charge_kept"),
    "statement_amount": ("",),
    "result_amount": ("",),
    # The paying result again, or (retried payouts) the failed first attempt's, after the paid one.
    "callback_twice": ("", "failed_first"),
    "listed_twice": ("",),
    "reversed": ("", "partial"),
    "reversed_linked": ("",),
    "marked_failed": ("", "attempt_receipt"),
    "charge": ("over", "missing"),
}
COLLECTION_FAULTS = {
    "left_out": ("",),
    "statement_amount": ("",),
    "short_paid": ("",),
    "listed_twice": ("",),
    "reversed": (COLLECTION_REASON, REVERSAL_REASON),
}
CLEAN = [
    record("payout", shapes=PAYOUT_SHAPES),
    record("collection"),
    record("top_up"),
]
FAULTY = [  # one branch per fault, so that each is drawn as often
    *(
        record("payout", plans=tuple((fault, name) for name in names), shapes=PAYOUT_SHAPES)
        for fault, names in PAYOUT_FAULTS.items()
    ),
    *(
        record("collection", plans=tuple((fault, name) for name in names))
        for fault, names in COLLECTION_FAULTS.items()
    ),
    record("unknown", plans=variants("withdrawn", "paid in")),
    record("orphan"),
    record("failed", shapes=PAYOUT_SHAPES),
    record("stale", plans=variants("pending", "submitting", "unknown"), shapes=("paid", "legacy")),
    record("unreadable"),
    record("double", plans=variants("phone", "user")),
    record(
        "shared",
        plans=variants(
            *(
                f"{when} {order}"
                for when in ("later", "earlier", "tie")
                for order in ("owner_first", "copier_first")
            )
        ),
        shapes=("paid", "legacy"),
    ),
    record("paid_twice", plans=variants("completed", "review")),
]
# Seconds into D: anywhere, its first and last seconds and minutes, either side of noon.
OFFSETS = st.one_of(
    st.integers(0, DAY - 1),
    st.sampled_from((0, DAY - 1)),
    st.integers(1, 59),
    st.integers(DAY - 60, DAY - 2),
    st.integers(43_195, 43_205),
)


def times_needed(made: Record) -> int:
    pairs = ("double", "shared", "paid_twice")
    return (
        1
        + (made.kind in pairs)
        + (made.shape == "retried" and made.kind in ("payout", "failed"))
        + (made.fault in FOLLOW_UPS)
    )


@st.composite
def scenarios(draw) -> Scenario:
    """Records (clean ones only, or with faults), their times, and the statement's layout."""
    faulty = draw(st.booleans())
    records = draw(st.lists(st.one_of(*CLEAN), max_size=8))
    if faulty:  # each fault in or out, so that a small budget still reaches every one
        records += [draw(fault) for fault in FAULTY if draw(st.booleans())]
        records = draw(st.permutations(records))
    needed = sum(times_needed(made) for made in records)
    offsets = iter(draw(st.lists(OFFSETS, min_size=needed, max_size=needed, unique=True)))
    for made in records:
        chunk = sorted(next(offsets) for _ in range(times_needed(made)))
        made.times = [SINCE + timedelta(seconds=offset) for offset in chunk]
    header = draw(st.sampled_from(("full", "short", "none"))) if faulty else "full"
    off = (None, Decimal("0.01"), Decimal("100.00"))
    layout = Layout(
        form=draw(st.sampled_from(("csv", "xlsx", "xlsx-native"))),
        newest_first=draw(st.booleans()),
        header=header,
        total_off=draw(st.sampled_from(off)) if faulty and header != "none" else None,
        status=draw(st.sampled_from(("Completed", "Success"))),
        negative_withdrawn=draw(st.booleans()),
        opening=draw(st.sampled_from((Decimal("5000000.00"), Decimal("1234567.89")))),
    )
    return Scenario(records, layout)


# -- what the truth leaves behind: rows, statement lines, findings due ----------------------------


@dataclass(eq=False)  # compared and hashed by identity: a line is one row of the file
class Line:
    """One statement row before it is placed: its receipt as written and UTC time."""

    receipt: str
    at: datetime
    paid_in: Decimal | None = None
    withdrawn: Decimal | None = None
    reason: str = PAYOUT_REASON
    linked: str | None = None
    started: datetime | None = None


@dataclass(frozen=True)
class Due:
    """A finding a fault calls for. Without a subject it names the later in the file of `row`
    and `twin`; with a `row` it is due only if that row is in the file, with `absent` only if
    that row is not, and with `inside` only if that time is inside the statement's period."""

    check: str
    subject: str | None
    at_risk: Decimal | None
    row: Line | None = None
    twin: Line | None = None
    absent: Line | None = None
    inside: datetime | None = None


@dataclass
class World:
    """The database rows and statement lines derived from the truth, and the findings due."""

    payouts: list[dict] = field(default_factory=list)
    legacy_payouts: list[dict] = field(default_factory=list)  # written with plain SQL
    attempts: list[dict] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    payments: list[dict] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    due: list[Due] = field(default_factory=list)
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def id(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter):03d}"

    def receipt(self) -> str:
        return f"TK{next(self.counter):04d}QZ"

    def line(self, line: Line) -> Line:
        self.lines.append(line)
        return line

    def expect(self, check, subject, at_risk, **conditions) -> None:
        self.due.append(Due(check, subject, at_risk, **conditions))


def mangled(receipt: str) -> str:
    """The receipt as a careless hand writes it: ' tk00 12qz '."""
    return f" {receipt[:4].lower()} {receipt[4:].lower()} "


def on_database(made: Record, receipt: str) -> str:
    return mangled(receipt) if made.spelling == "database" else receipt


def on_statement(made: Record, receipt: str) -> str:
    return mangled(receipt) if made.spelling == "statement" else receipt


def legacy_amount(amount: Decimal, written: str) -> str:
    return {
        "KSh": f"KSh {amount:,.2f}",
        "spaced": f"{amount:,.2f}".replace(",", " "),
        "kes": f"kes {amount}",
    }.get(written, f"{amount:.2f}")


# -- database rows ------------------------------------------------------------------------------


def attempt_row(world, payout_id, number, ocid, status, created, receipt=None) -> dict:
    return {
        "id": world.id("a"),
        "payout_id": payout_id,
        "attempt_no": number,
        "originator_conversation_id": ocid,
        "conversation_id": f"AG_{ocid}",
        "status": status,
        "created_at": created,
        "receipt": receipt,
    }


def result_row(world, ocid, code, received, *, payout_id, reference, amount=None, receipt=None):
    return {
        "id": world.id("r"),
        "kind": "result",
        "originator_conversation_id": ocid,
        "conversation_id": f"AG_{ocid}",
        "result_code": code,
        "result_code_text": str(code),
        "transaction_amount": amount,
        "transaction_id": receipt,
        "received_at": received,
        "payout_id": payout_id,
        "reference_id": reference,
    }


def legacy_result_row(world, reference, code, received, *, amount=None, receipt=None) -> dict:
    return {
        "id": world.id("r"),
        "reference_id": reference,
        "result_code": code,
        "transaction_id": receipt,
        "transaction_amount": amount,
        "received_at": received,
    }


def payout_row(world, made, status, started, *, amount=None, phone=None, user=None) -> dict:
    number = next(world.counter)
    return {
        "id": f"p{number:03d}",
        "user_id": user or f"user-{number}",
        "phone_number": phone or f"2547{number:08d}",
        "amount": made.amount if amount is None else amount,
        "status": status,
        "reference_id": f"REF-{number:03d}",
        "initiated_at": started,
    }


def service_payout(
    world, made, *, codes, times, status, receipt=None, paid=None, evidence=True, **who
) -> dict:
    """A payout the service wrote: one attempt and one result per code in `codes` (0 paid,
    with `receipt` and `paid`; its attempt records the receipt when `evidence`), the payout
    row last. Returns the payout row."""
    payout = payout_row(world, made, status, times[0] - made.lead, **who)
    payout_id, reference = payout["id"], payout["reference_id"]
    for number, (code, received) in enumerate(zip(codes, times, strict=True), start=1):
        ocid = f"OC{next(world.counter):03d}"
        paid_here = code == 0
        recorded = receipt if paid_here and evidence else None
        attempt_status = "completed" if recorded else "failed"
        world.attempts.append(
            attempt_row(world, payout_id, number, ocid, attempt_status, received, recorded)
        )
        world.results.append(
            result_row(
                world,
                ocid,
                code,
                received,
                payout_id=payout_id,
                reference=reference,
                amount=paid if paid_here else None,
                receipt=receipt if paid_here else None,
            )
        )
    moved = status == "completed"
    payout.update(
        originator_conversation_id=ocid,
        conversation_id=f"AG_{ocid}",
        attempt_count=len(codes),
        transaction_id=receipt if moved else None,
        paid_amount=paid if moved else None,
        completed_at=times[-1] if moved else None,
    )
    world.payouts.append(payout)
    return payout


def php_payout(world, made, *, code, at, status, receipt=None, paid=None, amount=None) -> dict:
    """A payout and its result as the PHP system wrote them: old columns, INT result code."""
    payout = payout_row(world, made, status, at - made.lead)
    moved = status == "completed"
    payout.update(
        amount=amount or legacy_amount(made.amount, made.written),
        transaction_id=receipt if moved else None,
        reason_code=None if code == 0 else str(code),
        completed_at=at if moved else None,
    )
    world.legacy_payouts.append(payout)
    world.results.append(
        legacy_result_row(world, payout["reference_id"], code, at, amount=paid, receipt=receipt)
    )
    return payout


@dataclass(frozen=True)
class Paid:
    payout_id: str
    reference: str  # the reference_id findings name the payout by
    result: dict  # the paying result row


def paid_payout(world, made, *, receipt, paid, times, status="completed", evidence=True) -> Paid:
    """A payout paid with `receipt` (after a code 17 when `times` has two), new or legacy."""
    stored = on_database(made, receipt)
    if made.shape == "legacy":
        payout = php_payout(
            world, made, code=0, at=times[-1], status=status, receipt=stored, paid=paid
        )
    else:
        codes = [17, 0] if len(times) == 2 else [0]
        payout = service_payout(
            world,
            made,
            codes=codes,
            times=times,
            status=status,
            receipt=stored,
            paid=paid,
            evidence=evidence,
        )
    return Paid(payout["id"], payout["reference_id"], world.results[-1])


# -- statement lines --------------------------------------------------------------------------


def tariff_charge(amount: Decimal) -> Decimal:
    """What TARIFF charges for a payout of `amount` (cents go to the band above)."""
    return next(charge for top, charge in TARIFF if amount <= top)


def tariff_file(path: Path) -> Path:
    rows = [
        "effective_from,amount_from,amount_to,registered,unregistered,"
        "withdrawal_charges_paid,source"
    ]
    low = 1
    for top, charge in TARIFF:
        rows.append(f",{low},{top},{charge},unknown,unknown,oracle")
        low = top + 1
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def charge_row(world, receipt: str, amount: Decimal, at: datetime) -> Line | None:
    """The charge row TARIFF asks of a payout row of `amount`, after it; none when free."""
    charge = tariff_charge(amount)
    if not charge:
        return None
    return world.line(Line(receipt, at, withdrawn=charge, reason=CHARGE_REASON))


def withdrawal(world, made, receipt, amount, at) -> Line:
    """A payout's Withdrawn row, and the charge row the tariff asks after it (the `charge`
    fault: 7.00 over, or left out)."""
    line = world.line(
        Line(on_statement(made, receipt), at, withdrawn=amount, started=at - made.lead)
    )
    if made.fault != "charge":
        charge_row(world, line.receipt, amount, at)
    elif made.variant == "over":
        charged = tariff_charge(amount) + CHARGE_OVER
        world.line(Line(line.receipt, at, withdrawn=charged, reason=CHARGE_REASON))
    return line


def deposit(world, made, receipt, amount, at, reason=COLLECTION_REASON) -> Line:
    started = at - made.lead
    return world.line(
        Line(on_statement(made, receipt), at, paid_in=amount, reason=reason, started=started)
    )


def listed_twice(world, line, at, at_risk) -> None:
    twin = world.line(
        Line(line.receipt, at, line.paid_in, line.withdrawn, line.reason, started=line.started)
    )
    world.expect("duplicate_receipt", None, at_risk, row=twin, twin=line)


# -- each kind of record ------------------------------------------------------------------------


def derive_payout(world: World, made: Record) -> None:
    """A paid payout; faults: left off the statement (its charge row kept or not), another
    amount on it, a result paying another amount, its result delivered twice, listed twice,
    reversed (in full or half, by its own receipt or a linked one), marked failed."""
    *times, follow = made.times if made.fault in FOLLOW_UPS else [*made.times, None]
    completed = times[-1]
    paid = made.other if made.fault == "result_amount" else made.amount
    marked_failed = made.fault == "marked_failed"
    receipt = world.receipt()
    payout = paid_payout(
        world,
        made,
        receipt=receipt,
        paid=paid,
        times=times,
        status="failed" if marked_failed else "completed",
        evidence=not marked_failed or made.variant == "attempt_receipt",
    )
    subject = f"payout {payout.reference}"
    if made.fault == "left_out":
        if made.variant == "charge_kept":
            kept = charge_row(world, on_statement(made, receipt), paid, completed)
            if kept is not None:
                world.expect("charge_mismatch", None, kept.withdrawn, row=kept)
        world.expect("missing_from_statement", subject, paid, inside=completed)
        return
    shown = made.other if made.fault == "statement_amount" else paid
    line = withdrawal(world, made, receipt, shown, completed)
    if made.fault == "statement_amount":
        world.expect("statement_amount_mismatch", subject, abs(shown - paid), row=line)
    elif made.fault == "result_amount":
        world.expect("amount_mismatch", subject, abs(paid - made.amount))
    elif made.fault == "callback_twice":
        again = payout.result
        if made.variant == "failed_first" and len(times) == 2 and made.shape != "legacy":
            again = world.results[-2]  # the first attempt's failure (code 17)
        world.results.append({**again, "id": world.id("r"), "transaction_id": None})
        world.results[-1]["received_at"] = follow
        world.expect("duplicate_callback", subject, None)
    elif made.fault == "listed_twice":
        listed_twice(world, line, follow, paid)
        charge_row(world, line.receipt, paid, follow)  # each row listed is charged
    elif made.fault == "charge":
        off = CHARGE_OVER if made.variant == "over" else tariff_charge(shown)
        if off:
            world.expect("charge_mismatch", subject, off, row=line)
    elif made.fault in ("reversed", "reversed_linked"):
        back = payout_reversal(world, made, line, follow)
        world.expect("reversal", subject, back.paid_in, row=back)
    elif marked_failed:
        world.expect("status_conflict", subject, made.amount)


def payout_reversal(world: World, made: Record, line: Line, at: datetime) -> Line:
    """The Paid In row giving a payout's money back (half of it for a partial reversal), under
    the payout's receipt or under a new one linked to it."""
    amount = (line.withdrawn / 2).quantize(NOTHING) if made.variant == "partial" else line.withdrawn
    linked = made.fault == "reversed_linked"
    receipt = world.receipt() if linked else line.receipt
    return world.line(
        Line(
            receipt,
            at,
            paid_in=amount,
            reason=REVERSAL_REASON,
            linked=line.receipt if linked else None,
        )
    )


def derive_collection(world: World, made: Record) -> None:
    """A paid STK collection; faults: left off the statement, another amount on it, paid
    short or over, listed twice, cancelled by a Withdrawn row with its receipt."""
    completed, *follow = made.times
    paid = made.other if made.fault == "short_paid" else made.amount
    receipt, payment_id = world.receipt(), world.id("s")
    world.payments.append(
        {
            "id": payment_id,
            "user_id": f"user-{payment_id}",
            "checkout_request_id": f"ws_CO_{payment_id}",
            "amount": made.amount,
            "paid_amount": paid,
            "method": "mpesa",
            "status": "completed",
            "mpesa_receipt": on_database(made, receipt),
            "result_code": "0",
            "phone_number": f"2541{next(world.counter):08d}",
            "created_at": completed - made.lead,
            "completed_at": completed,
        }
    )
    subject = f"payment ws_CO_{payment_id}"
    shown = made.other if made.fault == "statement_amount" else paid
    line = None if made.fault == "left_out" else deposit(world, made, receipt, shown, completed)
    if made.fault == "left_out":
        world.expect("missing_from_statement", subject, paid, inside=completed)
    elif made.fault == "statement_amount":
        world.expect("statement_amount_mismatch", subject, abs(shown - paid), row=line)
    elif made.fault == "short_paid":
        world.expect("stk_amount_mismatch", subject, abs(paid - made.amount))
    elif made.fault == "listed_twice":
        listed_twice(world, line, follow[0], paid)
    elif made.fault == "reversed":
        back = Line(line.receipt, follow[0], withdrawn=paid, reason=made.variant)
        world.expect("reversal", subject, paid, row=world.line(back))


def derive_top_up(world: World, made: Record) -> None:
    """Money moved in from the settlement account: an internal transfer, no finding."""
    world.line(Line(world.receipt(), made.times[0], paid_in=made.amount, reason=TOP_UP_REASON))


def derive_unknown(world: World, made: Record) -> None:
    """A statement row nobody recorded, withdrawn or paid in."""
    receipt, at = world.receipt(), made.times[0]
    if made.variant == "paid in":
        line = world.line(Line(receipt, at, paid_in=made.amount, reason=COLLECTION_REASON))
    else:
        line = world.line(Line(receipt, at, withdrawn=made.amount))
        charge_row(world, receipt, made.amount, at)
    world.expect("unrecorded_statement_entry", None, made.amount, row=line)


def derive_orphan(world: World, made: Record) -> None:
    """A paid result whose OriginatorConversationID no payout has; its withdrawal is listed."""
    receipt, at = world.receipt(), made.times[0]
    ocid = f"OC-LOST-{next(world.counter):03d}"
    stored = on_database(made, receipt)
    result = result_row(
        world, ocid, 0, at, payout_id=None, reference=None, amount=made.amount, receipt=stored
    )
    world.results.append(result)
    withdrawal(world, made, receipt, made.amount, at)
    world.expect("orphan_callback", f"result {result['id']}", made.amount)


def derive_failed(world: World, made: Record) -> None:
    """A payout that failed for good (2001), after a code 17 when retried; no money moved."""
    if made.shape == "legacy":
        payout = php_payout(world, made, code=2001, at=made.times[0], status="failed")
    else:
        codes = [17, 2001] if made.shape == "retried" else [2001]
        payout = service_payout(world, made, codes=codes, times=made.times, status="failed")
    world.expect("failed_result", f"payout {payout['reference_id']}", None)


def derive_stale(world: World, made: Record) -> None:
    """A payout still open long after initiation, with no result."""
    started = made.times[0]
    status = "pending" if made.shape == "legacy" else made.variant
    payout = payout_row(world, made, status, started)
    if made.shape == "legacy":
        world.legacy_payouts.append(payout)
    else:
        ocid = f"OC{next(world.counter):03d}"
        attempt_status = {"pending": "accepted", "submitting": "sending"}.get(status, status)
        world.attempts.append(attempt_row(world, payout["id"], 1, ocid, attempt_status, started))
        world.payouts.append({**payout, "originator_conversation_id": ocid, "attempt_count": 1})
    world.expect("stale_pending", f"payout {payout['reference_id']}", made.amount)


def derive_unreadable(world: World, made: Record) -> None:
    """A legacy payout whose amount nobody can read; its result and withdrawal are right."""
    receipt, at = world.receipt(), made.times[0]
    payout = php_payout(
        world,
        made,
        code=0,
        at=at,
        status="completed",
        receipt=receipt,
        paid=made.amount,
        amount="about a thousand",
    )
    withdrawal(world, made, receipt, made.amount, at)
    world.expect("unreadable_value", f"payout {payout['reference_id']}", None)


def derive_double(world: World, made: Record) -> None:
    """Two completed payouts of one amount to one phone (or user), both on the statement."""
    number = next(world.counter)
    who = {"phone": f"2547{number:08d}"} if made.variant == "phone" else {"user": f"twin-{number}"}
    ids = []
    for at in made.times:
        receipt = world.receipt()
        payout = service_payout(
            world,
            made,
            codes=[0],
            times=[at],
            status="completed",
            receipt=on_database(made, receipt),
            paid=made.amount,
            **who,
        )
        withdrawal(world, made, receipt, made.amount, at)
        ids.append(payout["reference_id"])
    world.expect("possible_double_payout", f"payout {ids[-1]}", made.amount)


def derive_shared(world: World, made: Record) -> None:
    """One receipt on two completed payouts: the owner's result states it, and another payout
    (the copier, of amount `other`) took it too (the service keeps a receipt on one result
    only). One statement row, the owner's. The holder whose amount that row shows keeps the
    receipt (of two, the first completed, then the smaller id); without the row, the first
    completed keeps it. The other is the duplicate. `variant`: when the copier completed, and
    whether it has the smaller id."""
    when, _, order = made.variant.partition(" ")
    first, second = made.times
    owner_at, copier_at = {"later": (first, second), "earlier": (second, first)}.get(
        when, (first, first)
    )
    receipt = world.receipt()
    copied = made.other

    def add_owner() -> tuple[str, str]:
        paid = paid_payout(world, made, receipt=receipt, paid=made.amount, times=[owner_at])
        return paid.payout_id, paid.reference

    def add_copier() -> tuple[str, str]:
        copy = Record("payout", amount=copied, lead=made.lead, spelling=made.spelling)
        stored = on_database(made, receipt)
        copier = service_payout(
            world,
            copy,
            codes=[0],
            times=[copier_at],
            status="completed",
            receipt=stored,
            paid=copied,
        )
        world.results[-1]["transaction_id"] = None
        return copier["id"], copier["reference_id"]

    if order == "copier_first":
        copier = add_copier()
        owner = add_owner()
    else:
        owner = add_owner()
        copier = add_copier()
    line = withdrawal(world, made, receipt, made.amount, owner_at)
    # (completed, id, amount, reference): ordered as recon picks the holder, named by reference
    holders = sorted([(owner_at, *owner, made.amount), (copier_at, *copier, copied)])
    holders = [(at, id_, amount, reference) for at, id_, reference, amount in holders]
    shown = [holder for holder in holders if holder[2] == made.amount]
    (_, _, at_risk, duplicate) = next(holder for holder in holders if holder != shown[0])
    world.expect("duplicate_receipt", f"payout {duplicate}", at_risk, row=line)
    (first_at, _, first_amount, first), (_, _, at_risk, duplicate) = holders
    world.expect("duplicate_receipt", f"payout {duplicate}", at_risk, absent=line)
    # Without its row (a statement cut at noon), the first holder is the one looked for.
    world.expect(
        "missing_from_statement", f"payout {first}", first_amount, absent=line, inside=first_at
    )


def derive_paid_twice(world: World, made: Record) -> None:
    """A payout whose two attempts were both paid, under two receipts, both withdrawn."""
    receipts = [world.receipt(), world.receipt()]
    payout = payout_row(world, made, made.variant, made.times[0] - made.lead)
    for number, (receipt, at) in enumerate(zip(receipts, made.times, strict=True), start=1):
        ocid = f"OC{next(world.counter):03d}"
        stored = on_database(made, receipt)
        world.attempts.append(
            attempt_row(world, payout["id"], number, ocid, "completed", at, stored)
        )
        world.results.append(
            result_row(
                world,
                ocid,
                0,
                at,
                payout_id=payout["id"],
                reference=payout["reference_id"],
                amount=made.amount,
                receipt=stored,
            )
        )
        withdrawal(world, made, receipt, made.amount, at)
    payout.update(
        originator_conversation_id=ocid,
        conversation_id=f"AG_{ocid}",
        attempt_count=2,
        transaction_id=on_database(made, receipts[0]),
        paid_amount=made.amount,
        completed_at=made.times[0],
    )
    world.payouts.append(payout)
    world.expect("paid_twice", f"payout {payout['reference_id']}", made.amount)


DERIVE = {
    "payout": derive_payout,
    "collection": derive_collection,
    "top_up": derive_top_up,
    "unknown": derive_unknown,
    "orphan": derive_orphan,
    "failed": derive_failed,
    "stale": derive_stale,
    "unreadable": derive_unreadable,
    "double": derive_double,
    "shared": derive_shared,
    "paid_twice": derive_paid_twice,
}


def derive(records: list[Record]) -> World:
    world = World()
    for made in records:
        event(f"record: {made.kind} {made.fault or ''}".strip())
        DERIVE[made.kind](world, made)
    return world


# -- writing the database and the statement -------------------------------------------------------

LEGACY_PAYOUT = sa.text(
    "INSERT INTO b2c_payments (id, user_id, phone_number, amount, status, reference_id,"
    " transaction_id, reason_code, initiated_at, completed_at) VALUES (:id, :user_id,"
    " :phone_number, :amount, :status, :reference_id, :transaction_id, :reason_code,"
    " :initiated_at, :completed_at)"
)


def write_database(url: str, world: World) -> None:
    """The service's rows through its tables; legacy payouts with plain SQL, so that SQLite
    keeps a text amount in the DECIMAL column as the old system left it."""
    engine = sa.create_engine(url)
    try:
        seed(
            engine,
            payouts=world.payouts,
            attempts=world.attempts,
            results=world.results,
            payments=world.payments,
        )
        with engine.begin() as connection:
            for payout in world.legacy_payouts:
                connection.execute(LEGACY_PAYOUT, sql_values(payout))
    finally:
        engine.dispose()


def sql_values(row: dict) -> dict:
    values = {key: row.get(key) for key in ("reason_code", "transaction_id", "completed_at")}
    values |= row
    return {key: sql_value(value) for key, value in values.items()}


def sql_value(value):
    """Times as the text SQLite keeps; Decimals as text (sqlite3 binds no Decimal)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value) if isinstance(value, Decimal) else value


def placed(world: World, layout: Layout) -> list[Line]:
    """The statement's rows in file order: those inside its Time Period, oldest or newest
    first (a charge after its payment, as the portal lists them)."""
    lines = sorted(world.lines, key=lambda line: line.at)  # stable: charges stay after
    if layout.header == "short":
        lines = [line for line in lines if line.at <= NOON]
    return lines[::-1] if layout.newest_first else lines


def header_rows(lines: list[Line], layout: Layout) -> list[list]:
    if layout.header == "none":
        return []
    paid_in = sum((line.paid_in or NOTHING for line in lines), NOTHING)
    withdrawn = sum((line.withdrawn or NOTHING for line in lines), NOTHING)
    end = "05-11-2025 11:59:59" if layout.header == "short" else "05-11-2025 23:59:59"
    return header_block(
        opening=f"{layout.opening:,.2f}",
        closing=f"{layout.opening + paid_in - withdrawn:,.2f}",
        paid_in=f"{paid_in:,.2f}",
        withdrawn=f"{withdrawn + (layout.total_off or NOTHING):,.2f}",
        end=end,
    )


def balances(lines: list[Line], layout: Layout) -> dict[Line, Decimal]:
    """Each row's running balance, counted oldest first (`lines` are in file order)."""
    balance, after = layout.opening, {}
    for line in lines[::-1] if layout.newest_first else lines:
        balance += (line.paid_in or NOTHING) - (line.withdrawn or NOTHING)
        after[line] = balance
    return after


def cells(line: Line, balance: Decimal, layout: Layout) -> dict:
    """The row as the portal writes it: text, or numbers and date cells in an XLSX."""
    withdrawn = line.withdrawn
    if withdrawn is not None and layout.negative_withdrawn:
        withdrawn = -withdrawn
    started = line.started or line.at
    if layout.form == "xlsx-native":
        values = {
            "when": line.at + NAIROBI_HOURS,
            "started": started + NAIROBI_HOURS,
            "paid_in": None if line.paid_in is None else float(line.paid_in),
            "withdrawn": None if withdrawn is None else float(withdrawn),
            "balance": float(balance),
        }
    else:
        values = {
            "when": nairobi(line.at),
            "started": nairobi(started),
            "paid_in": "" if line.paid_in is None else f"{line.paid_in:,.2f}",
            "withdrawn": "" if withdrawn is None else f"{withdrawn:,.2f}",
            "balance": f"{balance:,.2f}",
        }
    row = entry(
        line.receipt,
        values["when"],
        paid_in=values["paid_in"],
        withdrawn=values["withdrawn"],
        balance=values["balance"],
        reason=line.reason,
        status=layout.status,
    )
    row["Initiation Time"] = values["started"]
    row["Linked Transaction ID"] = line.linked or ""
    return row


def statement_file(directory: Path, lines: list[Line], layout: Layout) -> Path:
    after = balances(lines, layout)
    rows = [cells(line, after[line], layout) for line in lines]
    block = header_rows(lines, layout)
    if layout.form == "csv":
        path = directory / "statement.csv"
        path.write_text(statement_csv(rows, block or None), encoding="utf-8")
        return path
    path = directory / "statement.xlsx"
    workbook = Workbook()
    sheet = workbook.active
    for row in [*block, PORTAL_HEADER]:
        sheet.append(row)
    for row in rows:
        sheet.append([row[column] for column in PORTAL_HEADER])
    workbook.save(path)
    return path


# -- what recon must report, and what it did ----------------------------------------------------


def statement_period(lines: list[Line], layout: Layout) -> tuple[datetime, datetime] | None:
    """The period the statement speaks for: its Time Period, else the span of its rows."""
    if layout.header != "none":
        return SINCE, NOON if layout.header == "short" else LAST
    times = [line.at for line in lines]
    return (min(times), max(times)) if times else None


def planted(world: World, lines: list[Line], layout: Layout) -> Counter:
    """The findings due as (check, subject, at risk), given where each row landed."""
    first = len(header_rows(lines, layout)) + 2
    number = {line: first + index for index, line in enumerate(lines)}
    period = statement_period(lines, layout)
    charged = any(line.reason == CHARGE_REASON for line in lines)
    due = Counter()
    for finding in world.due:
        if finding.check == "charge_mismatch" and not charged:
            continue
        if finding.row is not None and finding.row not in number:
            continue
        if finding.absent is not None and finding.absent in number:
            continue
        if finding.inside is not None and not (period and period[0] <= finding.inside <= period[1]):
            continue
        subject = finding.subject
        if subject is None:
            later = max(number[finding.row], number.get(finding.twin, 0))
            subject = f"statement line {later}"
        due[(finding.check, subject, money(finding.at_risk))] += 1
    if layout.header != "full":
        due[("statement_coverage", "statement", NOTHING)] += 1
    if layout.total_off:
        due[("statement_integrity", "statement", NOTHING)] += 1
    return due


def money(amount: Decimal | None) -> Decimal:
    return NOTHING if amount is None else amount.quantize(NOTHING)


def reported(report) -> Counter:
    frame = report.findings.frame
    return Counter(
        (check, subject, money(at_risk))
        for check, subject, at_risk in zip(
            frame["check"], frame["subject"], frame["at_risk"], strict=True
        )
    )


def disagreement(report, due: Counter, found: Counter) -> str:
    frame = report.findings.frame
    reasons = "\n".join(
        f"  {s}: {r}" for s, r in zip(frame["subject"], frame["reason"], strict=True)
    )
    return (
        f"planted but not reported: {sorted((due - found).elements())}\n"
        f"reported but not planted: {sorted((found - due).elements())}\n"
        f"recon's reasons:\n{reasons}"
    )


# -- the oracle ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_database(tmp_path_factory) -> Path:
    """One migrated SQLite file, copied for each example (migrating each is too slow)."""
    path = tmp_path_factory.mktemp("oracle") / "template.db"
    engine = service.make_engine(f"sqlite:///{path}")
    service.migrate(engine)
    engine.dispose()
    return path


def reconcile(directory: Path, template: Path, world: World, lines, layout: Layout):
    database = directory / "recon.db"
    shutil.copy(template, database)
    url = f"sqlite:///{database}"
    write_database(url, world)
    statement = statement_file(directory, lines, layout)
    return build_report(
        url,
        since=SINCE,
        until=UNTIL,
        as_of=AS_OF,
        statement_path=str(statement),
        tariff_path=tariff_file(directory / "tariff.csv"),
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # explaining costs minutes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(scenario=scenarios())
def test_recon_reports_exactly_the_faults_planted(template_database, scenario):
    layout = scenario.layout
    event(f"statement: {layout.form}, header {layout.header}")
    event(f"statement: newest first {layout.newest_first}, total off {layout.total_off}")
    note(f"{scenario}")
    world = derive(scenario.records)
    lines = placed(world, layout)
    with tempfile.TemporaryDirectory() as directory:
        report = reconcile(Path(directory), template_database, world, lines, layout)

    due, found = planted(world, lines, layout), reported(report)

    assert found == due, disagreement(report, due, found)
    assert report.exit_code == (1 if due else 0)


# -- what the oracle found: recon's defects, each as a small case ---------------------------------
#
# Each is kept out of the oracle's generation (the comment there names the test) and is expected
# to fail until recon is fixed; strict, so a fix shows up as XPASS.


@pytest.fixture
def engine_and_url(template_database, tmp_path):
    path = tmp_path / "recon.db"
    shutil.copy(template_database, path)
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    yield engine, url
    engine.dispose()


def reconcile_day(url: str, tmp_path: Path, movements) -> list[tuple[str, str, Decimal]]:
    """Recon's findings for D against a balanced statement of `movements`."""
    statement = write_statement(tmp_path / "statement.csv", *balanced_statement(movements))
    report = build_report(url, since=SINCE, until=UNTIL, as_of=AS_OF, statement_path=str(statement))
    return sorted(reported(report).elements())


def withdrawn(receipt: str, hour: int, amount: str) -> tuple:
    """A payout row at `hour`:01 UTC on 2025-11-05, when recon_support's payouts complete."""
    return (receipt, nairobi(datetime(2025, 11, 5, hour, 1)), None, amount, PAYOUT_REASON)


def test_the_holder_the_statement_shows_keeps_a_shared_receipt(engine_and_url, tmp_path):
    """Found by the oracle: p02 took p01's receipt TK1 and completed an hour before p01; the
    statement row is p01's own 10.00. Recon compared the first-completed holder, p02, with it
    (statement_amount_mismatch, 990.00). The holder whose amount the row shows keeps the
    receipt; the other is the duplicate."""
    engine, url = engine_and_url
    seed(
        engine,
        payouts=[
            new_payout("p01", "10.00", "completed", ocid="OC1", txn="TK1", hour=8),
            new_payout("p02", "1000.00", "completed", ocid="OC2", txn="TK1", hour=7),
        ],
        results=[
            new_result("r1", ocid="OC1", code=0, amount="10.00", txn="TK1", hour=8),
            new_result("r2", ocid="OC2", code=0, amount="1000.00", hour=7),
        ],
    )

    found = reconcile_day(url, tmp_path, [withdrawn("TK1", 8, "10.00")])

    assert found == [("duplicate_receipt", "payout REF-p02", Decimal("1000.00"))]


def test_a_legacy_result_goes_to_the_payout_it_names(engine_and_url, tmp_path):
    """Found by the oracle. The PHP payout p02 was paid 10.00 with TK1 (its result says so and
    names REF2); p01 took TK1 later. Recon matched p02's result to p01 by the receipt before
    trying the reference it names (amount_mismatch, payout REF-p01, 990.00)."""
    engine, url = engine_and_url
    seed(
        engine,
        payouts=[
            new_payout("p01", "1000.00", "completed", ocid="OC1", txn="TK1", hour=9),
            legacy_payout("p02", "10.00", "completed", reference="REF2", txn="TK1", hour=8),
        ],
        results=[
            new_result("r1", ocid="OC1", code=0, amount="1000.00", hour=9),
            legacy_result("r2", reference="REF2", code=0, amount="10.00", txn="TK1", hour=8),
        ],
    )

    found = reconcile_day(url, tmp_path, [withdrawn("TK1", 8, "10.00")])

    assert found == [("duplicate_receipt", "payout REF-p01", Decimal("1000.00"))]


def test_a_failed_attempt_delivered_again_after_the_paid_one_is_no_failed_result(
    engine_and_url, tmp_path
):
    """Found by the oracle. p01's first attempt failed (17) at 07:02, its second paid TK1 at
    08:02, and Daraja delivered the first attempt's failure again at 09:02. Recon also reported
    failed_result (code 17) for the paid payout."""
    engine, url = engine_and_url
    seed(
        engine,
        payouts=[new_payout("p01", "1000.00", "completed", ocid="OC2", txn="TK1", hour=8)],
        attempts=[attempt("p01", "OC1"), {**attempt("p01", "OC2", number=2), "receipt": "TK1"}],
        results=[
            new_result("r1", ocid="OC1", code=17, hour=7),
            new_result("r2", ocid="OC2", code=0, amount="1000.00", txn="TK1", hour=8),
            new_result("r3", ocid="OC1", code=17, hour=9),
        ],
    )

    found = reconcile_day(url, tmp_path, [withdrawn("TK1", 8, "1000.00")])

    assert found == [("duplicate_callback", "payout REF-p01", NOTHING)]
