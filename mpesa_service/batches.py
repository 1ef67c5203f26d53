"""Bulk payouts: a file of payees, checked before anything is sent, approved once as a whole by a
second operator (maker-checker), then sent row by row as ordinary payouts.

The file (CSV, or XLSX as spreadsheets and the M-Pesa portal produce) has one row per payee:
reference, user_id, phone, amount, reason, description. Reading it sends nothing: every bad row
is named by its line and why, with the totals and the daily limits the batch would use. A file
with bad rows is refused unless the caller explicitly leaves them out.

An accepted file is a batch `awaiting_approval` (`sending` at once when BULK_REQUIRES_APPROVAL
is 0). An operator key other than the uploader's approves it (`sending`) or rejects it
(`rejected`, nothing sent); a compare-and-set decides between two decisions at once, and every
decision, refused ones too, is in the batch's audit trail.

The sending job leases a `sending` batch by compare-and-set and sends its rows at
BULK_PAYOUTS_PER_SECOND through initiate_payout, each row's reference being its payout's
idempotency key and reference_id. So a row sent again (after a crash, by a second process, from
a second upload of the file) replays the payout it already made and never makes another. A batch
is `finished` once every row has settled; its result file is each row with its payout's outcome.
"""

from __future__ import annotations

import csv
import io
import time
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

import openpyxl
import sqlalchemy as sa

from mpesa_service import log
from mpesa_service.approval import VERBS, Refused
from mpesa_service.context import ApiError, Service
from mpesa_service.ids import new_id
from mpesa_service.parsing import json_amount
from mpesa_service.payouts import (
    Maker,
    PayoutRequest,
    counted_today,
    initiate_payout,
    payout_row_view,
    sum_amount,
)
from mpesa_service.resolution import retryable_codes
from mpesa_service.storage import (
    b2c_payments,
    payout_batch_audit,
    payout_batch_rows,
    payout_batches,
    retry_deadlocked,
    utcnow,
)
from recon.rules import InvalidValue, mpesa_phone

COLUMNS = ("reference", "user_id", "phone", "amount", "reason", "description")
REQUIRED_FIELDS = ("reference", "user_id", "phone", "amount")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
AWAITING, SENDING, REJECTED, FINISHED = "awaiting_approval", "sending", "rejected", "finished"
BATCH_STATES = {
    AWAITING: "uploaded and checked; nothing sent until another operator key approves it",
    SENDING: "approved: the batch job is sending its rows",
    REJECTED: "rejected by an operator; none of its rows was sent",
    FINISHED: "every row has settled (completed, failed, review, or refused before sending)",
}
# A payout that will not move again without a person (a failed one unless it is retried).
SETTLED = ("completed", "review", "rejected", "expired")
SEND_BUDGET_SECONDS = 30.0
IN_CHUNK = 500


# --- reading the file ------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRow:
    """One data row of the file: its line (the header is line 1) and its cells by column."""

    line: int
    cells: dict[str, str]


def read_rows(content: bytes) -> list[FileRow]:
    """The file's data rows (blank ones left out); 400 for a file that is neither UTF-8 CSV
    nor XLSX, 422 for a missing column."""
    table = _xlsx_table(content) if content.startswith(b"PK\x03\x04") else _csv_table(content)
    header = next(table, None)
    if header is None:
        raise ApiError(422, "the file is empty: a header row of " + ", ".join(COLUMNS))
    names = [_text(name).lower() for name in header[1]]
    missing = [column for column in COLUMNS if column not in names]
    if missing:
        raise ApiError(
            422,
            f"missing column(s): {', '.join(missing)} (the header row needs {', '.join(COLUMNS)})",
            missing_columns=missing,
        )
    rows = []
    for line, cells in table:
        values = {name: _text(value) for name, value in zip(names, cells, strict=False)}
        if any(values.values()):
            rows.append(FileRow(line, {column: values.get(column, "") for column in COLUMNS}))
    return rows


def _csv_table(content: bytes):
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(400, "the file must be CSV in UTF-8, or XLSX") from None
    reader = csv.reader(io.StringIO(text))
    for cells in reader:
        yield reader.line_num, cells


def _xlsx_table(content: bytes):
    try:
        book = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        raise ApiError(400, "the file is not a readable XLSX workbook") from None
    sheet = book.worksheets[0]
    for line, cells in enumerate(sheet.iter_rows(values_only=True), 1):
        yield line, list(cells)


def _text(value: object) -> str:
    """A cell as text, as a CSV would hold it: an XLSX number keeps its fraction (10.5 is
    "10.5", refused as not whole; 1500.0 is "1500.0", taken), a blank is ""."""
    if value is None:
        return ""
    return str(value).strip()


# --- checking it -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GoodRow:
    line: int
    request: PayoutRequest


@dataclass(frozen=True)
class BadRow:
    line: int
    reference: str
    reason: str

    def as_dict(self) -> dict:
        return {"line": self.line, "reference": self.reference or None, "reason": self.reason}


@dataclass
class Checked:
    """The file checked: its good rows, its bad ones (by line, with why), and those whose
    reference is already a payout's or another batch's (`already_there`, also bad)."""

    good: list[GoodRow] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    already_there: list[dict] = field(default_factory=list)

    def totals(self) -> dict:
        amounts = [row.request.amount for row in self.good]
        return {"count": len(amounts), "amount": sum(amounts), "largest": max(amounts, default=0)}


def check_rows(svc: Service, rows: list[FileRow]) -> Checked:
    """Every row checked as POST /payouts would check it, and each reference against the file
    itself, the payouts and the other batches. Nothing is written or sent."""
    maximum = svc.settings.integer("BULK_MAX_ROWS")
    if len(rows) > maximum:
        raise ApiError(422, f"{len(rows):,} rows: more than BULK_MAX_ROWS {maximum:,}")
    checked = Checked()
    parsed = [(row, _row_request(svc, row)) for row in rows]
    repeated = _repeated_references(rows)
    used = _references_used(svc, [row.cells["reference"] for row in rows])
    for row, outcome in parsed:
        reference = row.cells["reference"]
        if isinstance(outcome, str):
            checked.bad.append(BadRow(row.line, reference, outcome))
        elif reference in repeated:
            lines = ", ".join(str(line) for line in repeated[reference])
            why = f"reference {reference!r} is on lines {lines}: a reference pays one row"
            checked.bad.append(BadRow(row.line, reference, why))
        elif reference in used:
            checked.bad.append(BadRow(row.line, reference, used[reference]))
            checked.already_there.append(
                {"line": row.line, "reference": reference, "where": used[reference]}
            )
        else:
            checked.good.append(GoodRow(row.line, outcome))
    return checked


def _row_request(svc: Service, row: FileRow) -> PayoutRequest | str:
    """The row as the payout it asks for, or why it cannot be one."""
    cells = row.cells
    missing = [name for name in REQUIRED_FIELDS if not cells[name]]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        phone = mpesa_phone(cells["phone"], "phone")
        request = PayoutRequest.from_body(row_body(cells), phone)
    except InvalidValue as error:
        return str(error)
    except ApiError as error:
        return error.message
    maximum = svc.settings.integer("PAYOUT_MAX_AMOUNT")
    if maximum and request.amount > maximum:
        return f"amount {request.amount:,} exceeds PAYOUT_MAX_AMOUNT {maximum:,}"
    return request


def row_body(cells: dict) -> dict:
    """A row's cells as the body POST /payouts takes."""
    return {
        "reference_id": cells["reference"],
        "user_id": cells["user_id"],
        "phone": cells["phone"],
        "amount": cells["amount"],
        "reason": cells["reason"] or None,
        "description": cells["description"] or None,
    }


def _repeated_references(rows: list[FileRow]) -> dict[str, list[int]]:
    lines = defaultdict(list)
    for row in rows:
        if row.cells["reference"]:
            lines[row.cells["reference"]].append(row.line)
    return {reference: found for reference, found in lines.items() if len(found) > 1}


def _references_used(svc: Service, references: list[str]) -> dict[str, str]:
    """{reference: where it is already used} for those a payout or a batch not rejected has."""
    used = {}
    wanted = sorted({reference for reference in references if reference})
    with svc.engine.connect() as conn:
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start : start + IN_CHUNK]
            for row in conn.execute(
                sa.select(payout_batch_rows.c.reference_id, payout_batch_rows.c.batch_id)
                .join(payout_batches, payout_batches.c.id == payout_batch_rows.c.batch_id)
                .where(payout_batch_rows.c.reference_id.in_(chunk))
                .where(payout_batches.c.status != REJECTED)
            ):
                used[row.reference_id] = (
                    f"reference {row.reference_id!r} is already in batch {row.batch_id}"
                )
            for row in conn.execute(
                sa.select(b2c_payments.c.reference_id, b2c_payments.c.status).where(
                    b2c_payments.c.reference_id.in_(chunk)
                )
            ):
                used[row.reference_id] = (
                    f"reference {row.reference_id!r} already belongs to a payout ({row.status})"
                )
    return used


def limits_used(svc: Service, good: list[GoodRow]) -> dict:
    """The daily limits the batch would use, on top of what today's payouts already use: the
    rows that would pass one are refused when their turn comes, not sent."""
    by_user = Counter()
    for row in good:
        by_user[row.request.user_id] += row.request.amount
    daily = svc.settings.integer("PAYOUT_DAILY_LIMIT")
    user_limit = svc.settings.integer("PAYOUT_USER_DAILY_LIMIT")
    with svc.engine.connect() as conn:
        today = sum_amount(conn, counted_today())
        used = _used_today_by_user(conn, sorted(by_user)) if user_limit else {}
    users = (
        {"user_id": user_id, **_use(user_limit, used.get(user_id, 0), amount)}
        for user_id, amount in sorted(by_user.items())
    )
    return {
        "PAYOUT_DAILY_LIMIT": _use(daily, today, sum(by_user.values())),
        "PAYOUT_USER_DAILY_LIMIT": {
            "limit": user_limit,
            "users_over": [user for user in users if user["over"]],
        },
    }


def _used_today_by_user(conn: sa.Connection, user_ids: list[str]) -> dict[str, int]:
    used = {}
    for start in range(0, len(user_ids), IN_CHUNK):
        chunk = user_ids[start : start + IN_CHUNK]
        used.update(
            (user_id, int(total))
            for user_id, total in conn.execute(
                sa.select(b2c_payments.c.user_id, sa.func.sum(b2c_payments.c.amount))
                .where(counted_today(), b2c_payments.c.user_id.in_(chunk))
                .group_by(b2c_payments.c.user_id)
            )
        )
    return used


def _use(limit: int, today: int, batch: int) -> dict:
    reach = today + batch
    return {
        "limit": limit,
        "used_today": today,
        "batch": batch,
        "would_reach": reach,
        "over": bool(limit) and reach > limit,
    }


def validation_report(svc: Service, checked: Checked) -> dict:
    return {
        "bad_rows": [bad.as_dict() for bad in checked.bad],
        "already_there": checked.already_there,
        "totals": checked.totals(),
        "limits": limits_used(svc, checked.good),
    }


# --- uploading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """An uploaded file, who uploaded it, and whether its bad rows are to be left out."""

    content: bytes
    file_name: str
    key_name: str
    skip_bad_rows: bool = False


def upload_batch(svc: Service, upload: Upload) -> dict:
    """Check the file and keep its good rows as a batch: `awaiting_approval`, or `sending` when
    BULK_REQUIRES_APPROVAL is 0. 422 with the report when it has bad rows and they are not to be
    left out, or when no row is left."""
    maximum = svc.settings.integer("BULK_MAX_BYTES")
    if len(upload.content) > maximum:
        raise ApiError(413, f"file of {len(upload.content):,} bytes: over BULK_MAX_BYTES")
    checked = check_rows(svc, read_rows(upload.content))
    report = validation_report(svc, checked)
    if checked.bad and not upload.skip_bad_rows:
        raise ApiError(
            422,
            f"{len(checked.bad)} bad row(s), nothing kept: fix them, or submit the file without "
            "them explicitly (skip_bad_rows)",
            report=report,
        )
    if not checked.good:
        raise ApiError(422, "no row left to pay", report=report)
    batch_id = retry_deadlocked(lambda: _store_batch(svc, upload, checked))
    return {**batch_detail(svc, batch_id), "report": report}


def _store_batch(svc: Service, upload: Upload, checked: Checked) -> str:
    batch_id, now = new_id(), utcnow()
    status = AWAITING if svc.settings.integer("BULK_REQUIRES_APPROVAL") else SENDING
    totals = checked.totals()
    with svc.engine.begin() as conn:
        conn.execute(
            payout_batches.insert().values(
                id=batch_id,
                status=status,
                file_name=upload.file_name[:255] or None,
                row_count=totals["count"],
                total_amount=totals["amount"],
                created_by=upload.key_name,
                created_at=now,
            )
        )
        conn.execute(payout_batch_rows.insert(), [_row_values(batch_id, g) for g in checked.good])
        skipped = ", ".join(str(bad.line) for bad in checked.bad)
        note = f"{totals['count']} rows, KES {totals['amount']:,}" + (
            f"; bad lines left out: {skipped}" if skipped else ""
        )
        batch_audit(conn, batch_id, upload.key_name, "uploaded", note)
    return batch_id


def _row_values(batch_id: str, good: GoodRow) -> dict:
    request = good.request
    return dict(
        id=new_id(),
        batch_id=batch_id,
        line_no=good.line,
        reference_id=request.reference_id,
        user_id=request.user_id,
        phone_number=request.phone,
        amount=request.amount,
        reason=request.reason,
        description=request.description,
    )


def batch_audit(conn: sa.Connection, batch_id: str, actor: str, action: str, note: str) -> None:
    conn.execute(
        payout_batch_audit.insert().values(
            id=new_id(),
            batch_id=batch_id,
            actor=actor,
            action=action,
            note=note,
            created_at=utcnow(),
        )
    )


# --- approval --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchDecision:
    """An operator's decision on a whole batch: by which key, and why."""

    batch_id: str
    key_name: str
    reason: str


def approve_batch(svc: Service, decision: BatchDecision) -> dict:
    """Approve a waiting batch: the batch job sends its rows. 403 for the uploader's key, 409
    for a batch not awaiting approval (or approved by another at this moment)."""
    _decide(svc, decision, "approved", SENDING)
    return batch_detail(svc, decision.batch_id)


def reject_batch(svc: Service, decision: BatchDecision) -> dict:
    """End a waiting batch `rejected`, none of its rows sent; the reason is required."""
    if not decision.reason.strip():
        raise ApiError(
            400, "reason: say why it is rejected (it goes into the audit trail)", field="reason"
        )
    _decide(svc, decision, "rejected", REJECTED)
    return batch_detail(svc, decision.batch_id)


def _decide(svc: Service, decision: BatchDecision, action: str, target: str) -> None:
    def run():
        with svc.engine.begin() as conn:
            batch = _batch(conn, decision.batch_id)
            if batch.created_by == decision.key_name:
                raise Refused(
                    403,
                    f"API key {decision.key_name} uploaded batch {batch.id}: another "
                    f"operator's key must {VERBS[action]} it",
                )
            moved = conn.execute(
                payout_batches.update()
                .where(payout_batches.c.id == batch.id, payout_batches.c.status == AWAITING)
                .values(
                    status=target,
                    decided_by=decision.key_name,
                    decided_at=utcnow(),
                    decision_note=decision.reason or None,
                )
            ).rowcount
            if not moved:
                raise ApiError(
                    409,
                    f"batch {batch.id} is {batch.status}, not awaiting approval"
                    + (
                        " (decided by another at the same moment)"
                        if batch.status == AWAITING
                        else ""
                    ),
                    current_status=batch.status,
                )
            batch_audit(conn, batch.id, decision.key_name, action, decision.reason)

    try:
        retry_deadlocked(run)
    except Refused as refused:
        with svc.engine.begin() as conn:
            note = f"{refused.message}; reason given: {decision.reason}" if decision.reason else ""
            batch_audit(
                conn,
                decision.batch_id,
                decision.key_name,
                f"{VERBS[action]}_refused",
                note or refused.message,
            )
        raise


def _batch(conn: sa.Connection, batch_id: str):
    batch = conn.execute(sa.select(payout_batches).where(payout_batches.c.id == batch_id)).first()
    if batch is None:
        raise ApiError(404, f"no batch {batch_id!r}")
    return batch


# --- sending ---------------------------------------------------------------------------------


class Pace:
    """At most `per_second` sends a second, across every batch one job run sends."""

    def __init__(self, per_second: int):
        self.interval = 1.0 / max(per_second, 1)
        self.next_at = time.monotonic()

    def wait(self) -> None:
        delay = self.next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_at = max(self.next_at, time.monotonic()) + self.interval


def send_batches(svc: Service, budget_seconds: float = SEND_BUDGET_SECONDS) -> int:
    """The batch job: for each `sending` batch this process can lease, send its unsent rows
    (for up to `budget_seconds` in all), then finish the batches whose rows have all settled.
    Returns how many rows it sent."""
    deadline = time.monotonic() + budget_seconds
    pace = Pace(svc.settings.integer("BULK_PAYOUTS_PER_SECOND"))
    with svc.engine.connect() as conn:
        sending = (
            conn.execute(
                sa.select(payout_batches.c.id)
                .where(payout_batches.c.status == SENDING)
                .order_by(payout_batches.c.created_at)
            )
            .scalars()
            .all()
        )
    sent = 0
    for batch_id in sending:
        lease = Lease(svc, batch_id)
        if time.monotonic() < deadline and lease.take():
            try:
                sent += _send_rows(svc, batch_id, pace, deadline, lease)
            finally:
                lease.give_back()
        finish_if_settled(svc, batch_id)
    return sent


class Lease:
    """This run's claim on a batch, taken and renewed by compare-and-set, so one process at a
    time sends it (a second could not pay a row twice, only pass the rate). It lasts twice
    DARAJA_TIMEOUT_SECONDS (at least 10 s) past each row, so a process that died holds it
    no longer than that."""

    def __init__(self, svc: Service, batch_id: str):
        self.svc, self.batch_id, self.owner = svc, batch_id, new_id()
        self.length = timedelta(
            seconds=max(10.0, 2 * svc.settings.seconds("DARAJA_TIMEOUT_SECONDS"))
        )

    def take(self) -> bool:
        now = utcnow()
        lapsed = sa.or_(
            payout_batches.c.claimed_until.is_(None), payout_batches.c.claimed_until < now
        )
        return self._set(lapsed, payout_batches.c.status == SENDING, claim_owner=self.owner)

    def renew(self) -> bool:
        return self._set(payout_batches.c.claim_owner == self.owner)

    def give_back(self) -> None:
        self._set(payout_batches.c.claim_owner == self.owner, claim_owner=None, claimed_until=None)

    def _set(self, *conditions, **values) -> bool:
        values.setdefault("claimed_until", utcnow() + self.length)
        with self.svc.engine.begin() as conn:
            statement = (
                payout_batches.update()
                .where(payout_batches.c.id == self.batch_id, *conditions)
                .values(**values)
            )
            return conn.execute(statement).rowcount == 1


def _send_rows(svc: Service, batch_id: str, pace: Pace, deadline: float, lease: Lease) -> int:
    with svc.engine.connect() as conn:
        batch = _batch(conn, batch_id)
        rows = conn.execute(
            sa.select(payout_batch_rows)
            .where(payout_batch_rows.c.batch_id == batch_id)
            .where(payout_batch_rows.c.payout_id.is_(None), payout_batch_rows.c.refused.is_(None))
            .order_by(payout_batch_rows.c.line_no)
        ).all()
    sent = 0
    for row in rows:
        if time.monotonic() >= deadline or not lease.renew():
            break
        pace.wait()
        send_row(svc, batch, row)
        sent += 1
    return sent


def send_row(svc: Service, batch, row) -> None:
    """Send one row as an ordinary payout, its reference the idempotency key: sending it again
    replays the payout made the first time. A row initiate_payout refuses (a limit, its
    reference taken meanwhile) is marked refused, never sent."""
    approved = f"approved with batch {batch.id} by {batch.decided_by}" if batch.decided_by else None
    maker = Maker(batch.created_by, via=f"batch {batch.id}", approved_in=approved)
    body = row_body(
        {
            "reference": row.reference_id,
            "user_id": row.user_id,
            "phone": row.phone_number,
            "amount": str(int(row.amount)),
            "reason": row.reason,
            "description": row.description,
        }
    )
    try:
        _, answer = initiate_payout(svc, body, row.reference_id, maker)
    except ApiError as error:
        log.warning("batch %s line %s not sent: %s", batch.id, row.line_no, error.message)
        _mark_row(svc, row, refused=error.message[:1000])
        return
    with svc.engine.connect() as conn:
        payout_id = conn.execute(
            sa.select(b2c_payments.c.id).where(
                b2c_payments.c.reference_id == answer["reference_id"]
            )
        ).scalar()
    _mark_row(svc, row, payout_id=payout_id)


def _mark_row(svc: Service, row, **values) -> None:
    with svc.engine.begin() as conn:
        conn.execute(
            payout_batch_rows.update()
            .where(payout_batch_rows.c.id == row.id, payout_batch_rows.c.payout_id.is_(None))
            .where(payout_batch_rows.c.refused.is_(None))
            .values(**values)
        )


def finish_if_settled(svc: Service, batch_id: str) -> bool:
    """Mark a `sending` batch `finished` (compare-and-set) once every row has settled."""
    detail = batch_detail(svc, batch_id)
    progress = detail["progress"]
    if detail["status"] != SENDING or progress["settled"] < progress["rows"]:
        return False
    with svc.engine.begin() as conn:
        moved = conn.execute(
            payout_batches.update()
            .where(payout_batches.c.id == batch_id, payout_batches.c.status == SENDING)
            .values(status=FINISHED, finished_at=utcnow())
        ).rowcount
        if moved:
            counts = ", ".join(f"{n} {status}" for status, n in sorted(detail["counts"].items()))
            batch_audit(conn, batch_id, "system", "finished", counts)
    return bool(moved)


# --- what a batch shows ----------------------------------------------------------------------


def batch_detail(svc: Service, batch_id: str) -> dict:
    """The batch as GET /payouts/batches/<batch_id> shows it: counts by status, progress, its
    rows with their payouts' outcomes, and its audit trail."""
    with svc.engine.connect() as conn:
        batch = _batch(conn, batch_id)
        rows = conn.execute(
            sa.select(payout_batch_rows, b2c_payments)
            .outerjoin(b2c_payments, b2c_payments.c.id == payout_batch_rows.c.payout_id)
            .where(payout_batch_rows.c.batch_id == batch_id)
            .order_by(payout_batch_rows.c.line_no)
        ).all()
        history = conn.execute(
            sa.select(payout_batch_audit)
            .where(payout_batch_audit.c.batch_id == batch_id)
            .order_by(payout_batch_audit.c.created_at)
        ).all()
    settled_when = _settled_rule(svc)
    views = [_row_view(batch, row) for row in rows]
    settled = sum(1 for row, view in zip(rows, views, strict=True) if settled_when(row, view))
    return {
        **batch_summary(batch),
        "counts": dict(Counter(view["status"] for view in views)),
        "progress": {
            "rows": len(views),
            "sent": sum(1 for view in views if view["sent"]),
            "settled": settled,
            "percent": round(100 * settled / len(views)) if views else 100,
        },
        "rows": views,
        "history": [
            {"actor": h.actor, "action": h.action, "note": h.note, "at": _iso(h.created_at)}
            for h in history
        ],
    }


def batch_summary(batch) -> dict:
    return {
        "batch_id": batch.id,
        "status": batch.status,
        "file_name": batch.file_name,
        "row_count": batch.row_count,
        "total_amount": json_amount(batch.total_amount),
        "created_by": batch.created_by,
        "created_at": _iso(batch.created_at),
        "decided_by": batch.decided_by,
        "decided_at": _iso(batch.decided_at),
        "decision_note": batch.decision_note,
        "finished_at": _iso(batch.finished_at),
    }


def _row_view(batch, row) -> dict:
    """A row as the batch page and the result file show it."""
    m = row._mapping
    view = {
        "line": m[payout_batch_rows.c.line_no],
        "reference_id": m[payout_batch_rows.c.reference_id],
        "user_id": m[payout_batch_rows.c.user_id],
        "phone_number": m[payout_batch_rows.c.phone_number],
        "amount": json_amount(m[payout_batch_rows.c.amount]),
        "sent": m[payout_batch_rows.c.payout_id] is not None,
        "refused": m[payout_batch_rows.c.refused],
        "transaction_id": None,
        "result_code": None,
        "result_meaning": None,
        "result_desc": None,
    }
    if view["sent"]:
        payout = payout_row_view(_PayoutColumns(row))
        view.update(
            status=payout["status"],
            transaction_id=payout["transaction_id"],
            result_code=payout["result_code"],
            result_meaning=payout["result_meaning"],
            result_desc=payout["result_desc"],
        )
    elif view["refused"]:
        view.update(status="refused", result_desc=view["refused"])
    else:
        view["status"] = {AWAITING: AWAITING, REJECTED: "not sent"}.get(batch.status, "queued")
    return view


class _PayoutColumns:
    """The b2c_payments columns of a joined row, read as attributes like a payout row."""

    def __init__(self, row):
        self._mapping = row._mapping

    def __getattr__(self, name: str):
        return self._mapping[b2c_payments.c[name]]


def _settled_rule(svc: Service):
    """row, view -> whether the row has settled: refused, or its payout will not move again
    without a person (failed counts only once no new attempt is due)."""
    retryable = retryable_codes(svc.settings)
    most = svc.settings.integer("PAYOUT_MAX_ATTEMPTS")

    def settled(row, view) -> bool:
        if view["status"] == "refused" or view["status"] in SETTLED:
            return True
        if view["status"] != "failed":
            return False
        payout = _PayoutColumns(row)
        return payout.reason_code not in retryable or payout.attempt_count >= most

    return settled


def list_batches(svc: Service, limit: int = 100) -> list[dict]:
    with svc.engine.connect() as conn:
        batches = conn.execute(
            sa.select(payout_batches).order_by(payout_batches.c.created_at.desc()).limit(limit)
        ).all()
    return [batch_summary(batch) for batch in batches]


def _iso(moment) -> str | None:
    return moment.isoformat() + "Z" if moment else None


# --- the result file -------------------------------------------------------------------------

RESULT_COLUMNS = (
    "line",
    "reference_id",
    "user_id",
    "phone_number",
    "amount",
    "status",
    "transaction_id",
    "result_code",
    "result_meaning",
    "result_desc",
)


def result_file(svc: Service, batch_id: str, kind: str) -> bytes:
    """The batch's rows with their outcomes as CSV or XLSX, through the reconciliation report's
    writer (formula-like text made inert)."""
    # recon.report brings pandas, which only the result file needs.
    import pandas as pd

    from recon.report import table_csv, table_xlsx

    rows = batch_detail(svc, batch_id)["rows"]
    frame = pd.DataFrame([[row[c] for c in RESULT_COLUMNS] for row in rows], columns=RESULT_COLUMNS)
    if kind == "csv":
        return table_csv(frame)
    return table_xlsx(frame, "result")
