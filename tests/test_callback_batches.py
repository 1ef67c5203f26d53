"""Callbacks applied in batches (group commit) end exactly as if applied one by one: the same
payouts, attempts, stored callbacks and flags, whatever the mix and however it is split."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

import service
from mpesa_service.callbacks import apply_callback
from mpesa_service.journal import mark_journal_entries_applied
from mpesa_service.storage import (
    b2c_payment_callbacks,
    b2c_payments,
    b2c_payout_attempts,
    callback_journal,
    driver_form,
    events,
    inserting,
    payment_flags,
    payout_audit,
    utcnow,
)
from mpesa_service.throughput.groupcommit import BATCH, GroupCommit
from mpesa_service.throughput.handoff import Journaled
from mpesa_service.throughput.statements import batch_engine, run_together
from mpesa_service.throughput.success_batch import (
    PayoutMoved,
    SuccessBatch,
    answering,
    completing,
    known_receipts,
    matching,
)
from mpesa_service.throughput.writer import apply_deliveries, held_connection, wait_applied
from tests.service_support import TOKEN
from tests.test_payouts import result_body

# --- the group commit itself -------------------------------------------------------------------


def group_commit(process, then=lambda tickets: None, name="group-commit-test") -> GroupCommit:
    """A GroupCommit made as the callback writer is, its second stage doing nothing unless
    given something to do."""
    return GroupCommit(name, process, then, contextlib.nullcontext)


def test_concurrent_submissions_are_batched_and_each_gets_its_own_answer():
    seen_batches = []

    def process(tickets):
        seen_batches.append(len(tickets))
        time.sleep(0.02)  # a slow fsync: later submitters queue up meanwhile
        for ticket in tickets:
            ticket.result = ticket.item * 10

    commit = group_commit(process)
    answers = {}
    start = threading.Barrier(20)

    def submit(number):
        start.wait()
        answers[number] = commit.submit(number)

    threads = [threading.Thread(target=submit, args=(number,)) for number in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {number: number * 10 for number in range(20)}
    assert sum(seen_batches) == 20
    assert commit.largest_batch > 1 and commit.batches == len(seen_batches) < 20


def test_batches_are_processed_one_at_a_time():
    running, most = [0], [0]
    lock = threading.Lock()

    def process(tickets):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1

    commit = group_commit(process)
    start = threading.Barrier(30)

    def submit(number):
        start.wait()
        for _ in range(3):
            commit.submit(number)

    threads = [threading.Thread(target=submit, args=(number,)) for number in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1


def test_an_error_reaches_only_its_own_submitter_and_a_crash_reaches_the_batch():
    def process(tickets):
        for ticket in tickets:
            if ticket.item == "bad":
                ticket.error = ValueError("bad item")
            elif ticket.item == "crash":
                raise RuntimeError("the batch broke")
            else:
                ticket.result = "ok"

    commit = group_commit(process)
    assert commit.submit("fine") == "ok"
    with pytest.raises(ValueError, match="bad item"):
        commit.submit("bad")
    with pytest.raises(RuntimeError, match="the batch broke"):
        commit.submit("crash")
    assert commit.submit("fine again") == "ok"


def test_a_ticket_finished_early_is_answered_before_its_batch_is_done():
    done = threading.Event()

    def process(tickets):
        for ticket in tickets:
            ticket.result = "journaled"
            if ticket.item == "early":
                ticket.finish()
        if not done.wait(5):
            raise TimeoutError("the test never let the batch finish")
        for ticket in tickets:
            ticket.result = "applied"

    commit = group_commit(process)
    assert commit.submit("early") == "journaled"
    assert commit.drain(timeout=0.1) is False  # answered, not yet processed
    done.set()
    assert commit.drain(timeout=5) is True
    assert commit.submit("late") == "applied"  # not finished early: answered at the end


def test_a_crash_after_a_ticket_was_answered_reaches_only_the_others():
    def process(tickets):
        for ticket in tickets:
            if ticket.item == "early":
                ticket.result = "journaled"
                ticket.finish()
        raise RuntimeError("the batch broke")

    commit = group_commit(process)
    assert commit.submit("early") == "journaled"
    with pytest.raises(RuntimeError, match="the batch broke"):
        commit.submit("late")
    assert commit.drain(timeout=5) is True


def test_the_writer_thread_leaves_when_idle_and_comes_back_on_demand():
    commit = group_commit(lambda tickets: None, name="idle-writer-test")
    commit.submit("one")

    def writers():
        return [t for t in threading.enumerate() if t.name == "idle-writer-test"]

    deadline = time.monotonic() + 5
    while writers() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writers() == []
    commit.submit("two")
    assert commit.batches == 2


def test_the_second_stage_holds_its_context_across_batches():
    events, inside = [], threading.local()

    @contextlib.contextmanager
    def context():
        events.append(("enter", threading.get_ident()))
        inside.held = True
        yield
        events.append(("exit", threading.get_ident()))

    def then(tickets):
        for ticket in tickets:
            ticket.result = getattr(inside, "held", False)

    commit = GroupCommit("held-context", lambda tickets: None, then, context)
    assert [commit.submit(number) for number in range(5)] == [True] * 5
    deadline = time.monotonic() + 5
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    # Five batches, one second-stage thread, entered once and left once when it went idle.
    assert commit.batches == 5
    assert [kind for kind, _ in events] == ["enter", "exit"]
    assert events[0][1] == events[1][1]


def answered_early(tickets):
    """A first stage that answers every ticket at once, as the journal stage does."""
    for ticket in tickets:
        ticket.result = f"journaled {ticket.item}"
        ticket.handover = ticket.item
        ticket.finish()


def test_a_second_stage_runs_on_its_own_thread_after_the_answer_and_drain_waits_for_it():
    release, applied, threads = threading.Event(), [], set()

    def apply(tickets):
        threads.add(threading.current_thread().name)
        if not release.wait(5):
            raise TimeoutError("the test never let the second stage finish")
        applied.extend(ticket.handover for ticket in tickets)

    commit = group_commit(answered_early, then=apply, name="two-stage")
    assert commit.submit("a") == "journaled a"  # answered while `apply` is held
    assert commit.submit("b") == "journaled b"  # and the first stage goes on meanwhile
    assert applied == [] and commit.drain(timeout=0.1) is False
    release.set()
    assert commit.drain(timeout=5) is True
    assert applied == ["a", "b"]
    assert threads == {"two-stage-then"}


def test_the_second_stage_answers_what_the_first_left_unanswered_with_its_error():
    def journal(tickets):
        for ticket in tickets:
            if ticket.item == "unreadable":
                ticket.error = ValueError("not journaled")
            ticket.handover = ticket.item
            if ticket.item.startswith("early"):
                ticket.finish()

    def apply(tickets):
        for ticket in tickets:
            if "broken" in ticket.item:
                raise RuntimeError("applying broke")
            ticket.result = f"applied {ticket.item}"

    commit = group_commit(journal, then=apply)
    assert commit.submit("late") == "applied late"
    with pytest.raises(RuntimeError, match="applying broke"):
        commit.submit("late broken")
    assert commit.submit("early broken") is None  # answered before applying broke
    with pytest.raises(ValueError, match="not journaled"):
        commit.submit("unreadable")  # never reaches the second stage
    assert commit.drain(timeout=5) is True


def test_a_full_second_stage_holds_back_the_first():
    entered, release, answered = threading.Event(), threading.Event(), []

    def apply(tickets):
        entered.set()
        release.wait(5)

    commit = group_commit(answered_early, then=apply)
    answered.append(commit.submit(0))
    assert entered.wait(5)  # the second stage holds item 0 from here on

    def submit_all():
        for number in range(1, BATCH + 10):
            answered.append(commit.submit(number))

    submitter = threading.Thread(target=submit_all)
    submitter.start()
    deadline = time.monotonic() + 5
    while len(answered) < BATCH + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # time enough for more, were nothing holding them back
    # One item being applied, a batch's worth waiting for it, and one journaled but not yet
    # handed on.
    assert len(answered) == 1 + BATCH + 1
    release.set()
    submitter.join(5)
    assert len(answered) == BATCH + 10 and commit.drain(timeout=5) is True


def test_the_second_stage_thread_holds_its_context_and_leaves_when_idle():
    events = []

    @contextlib.contextmanager
    def context():
        events.append(("enter", threading.current_thread().name))
        yield
        events.append(("exit", threading.current_thread().name))

    commit = GroupCommit("ctx", answered_early, lambda tickets: None, context)
    for number in range(3):
        commit.submit(number)
    assert commit.drain(timeout=5) is True
    deadline = time.monotonic() + 5
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert events == [("enter", "ctx-then"), ("exit", "ctx-then")]
    commit.submit("again")
    assert commit.drain(timeout=5) is True
    assert events[2] == ("enter", "ctx-then")  # a new second-stage thread, on demand


# --- batches against the database --------------------------------------------------------------

AMOUNT = 1000


def seed(conn, name: str, status: str = "pending", receipt: str | None = None) -> None:
    """A payout `name` with one attempt whose OriginatorConversationID is `ocid-<name>`."""
    now = utcnow()
    conn.execute(
        b2c_payments.insert().values(
            id=f"id-{name}",
            user_id="batch-test",
            phone_number="254712345678",
            amount=AMOUNT,
            reference_id=f"ref-{name}",
            status=status,
            originator_conversation_id=f"ocid-{name}",
            conversation_id=f"conv-{name}",
            transaction_id=receipt,
            attempt_count=1,
            initiated_at=now,
            updated_at=now,
        )
    )
    conn.execute(
        b2c_payout_attempts.insert().values(
            id=f"attempt-{name}",
            payout_id=f"id-{name}",
            attempt_no=1,
            status="accepted",
            originator_conversation_id=f"ocid-{name}",
            conversation_id=f"conv-{name}",
            created_at=now,
            sent_at=now,
        )
    )


def seed_scenario(engine) -> None:
    with engine.begin() as conn:
        for name in ("p1", "p2", "p3", "p4", "p5", "p6", "p8", "p10", "p11", "p12", "p13"):
            seed(conn, name)
        seed(conn, "p7", status="failed")
        seed(conn, "p9", status="completed", receipt="R9")


def success(name, receipt, amount=AMOUNT):
    body = result_body(f"ocid-{name}", amount=amount, receipt=receipt)
    body["Result"]["ConversationID"] = f"conv-{name}"
    return ("b2c_result", json.dumps(body))


def failure(name, code=2001):
    body = result_body(f"ocid-{name}", code=code)
    body["Result"]["ConversationID"] = f"conv-{name}"
    return ("b2c_result", json.dumps(body))


def timeout(name):
    body = result_body(f"ocid-{name}")
    body["Result"].pop("ResultParameters")
    body["Result"].update(ResultCode="SFC_IC0003", ResultDesc="Queue timeout")
    return ("b2c_timeout", json.dumps(body))


# Every way a delivery can go: plain successes (the fast path), a short payment, the same
# receipt for another payout in the same batch and from an old payout, a duplicate, a failure,
# a queue timeout then the late success, an orphan, a body that is not JSON, a success for a
# failed payout, plain successes after all of those, and a receipt differing only in case.
DELIVERIES = [
    success("p1", "R1"),
    success("p2", "R2", amount=900),
    success("p3", "R1"),
    failure("p4"),
    timeout("p5"),
    success("p5", "R5"),
    success("p6", "R6"),
    success("p6", "R6"),
    success("nobody", "R-orphan"),
    ("b2c_result", "{not json"),
    success("p7", "R7"),
    success("p10", "R9"),
    success("p8", "R8"),
    success("p11", "R11"),
    success("p12", "R12"),
    success("p13", "r12"),
]


PAYOUT_FIELDS = [
    "reference_id",
    "status",
    "transaction_id",
    "paid_amount",
    "reason_code",
    "receiver_name",
]
ATTEMPT_FIELDS = ["id", "status", "response_code", "error_message", "receipt"]
STORED_FIELDS = [
    "journal_id",
    "kind",
    "outcome",
    "transaction_id",
    "reference_id",
    "transaction_amount",
]


def picked(conn, table: sa.Table, names: list[str]) -> list[tuple]:
    """These columns of every row of `table`, ordered by the first."""
    columns = [table.c[name] for name in names]
    return [tuple(row) for row in conn.execute(sa.select(*columns).order_by(columns[0]))]


def outcome(engine, journal_ids: list[str]) -> dict:
    """Everything the deliveries wrote, without generated ids and times."""
    order = {journal_id: index for index, journal_id in enumerate(journal_ids)}
    with engine.connect() as conn:
        payouts = picked(conn, b2c_payments, PAYOUT_FIELDS)
        attempts = picked(conn, b2c_payout_attempts, ATTEMPT_FIELDS)
        stored = picked(conn, b2c_payment_callbacks, STORED_FIELDS)
        flags = picked(conn, payment_flags, ["subject_type", "flag", "detail"])
        journal = conn.execute(sa.select(callback_journal.c.id)).scalars().all()
        emitted = conn.execute(sa.select(events.c.subject, events.c.type, events.c.body)).all()
    return {
        "events": sorted(
            (subject, kind, json.dumps(timeless(json.loads(body)["data"]), sort_keys=True))
            for subject, kind, body in emitted
        ),
        "payouts": payouts,
        "attempts": attempts,
        "stored": sorted((order[row[0]], *row[1:]) for row in stored),
        "flags": sorted(flags),
        "journal": sorted(order[journal_id] for journal_id in journal),
    }


TIMES = {"initiated_at", "completed_at", "created_at", "at"}


def timeless(value):
    """An event's data without the times that differ from one run to the next."""
    if isinstance(value, dict):
        return {key: timeless(item) for key, item in value.items() if key not in TIMES}
    if isinstance(value, list):
        return [timeless(item) for item in value]
    return value


def run(tmp_path: Path, database_url: str, chunk: int | None) -> dict:
    """Seed the scenario, apply DELIVERIES in batches of `chunk` (or, with None, each in its
    own transaction through apply_callback), and return the outcome."""
    svc = service_for(tmp_path, database_url)
    try:
        seed_scenario(svc.engine)
        deliveries = [
            Journaled(kind, raw, f"journal-{index:02d}")
            for index, (kind, raw) in enumerate(DELIVERIES)
        ]
        if chunk is None:
            for delivery in deliveries:
                apply_callback(svc, delivery.kind, delivery.raw, delivery.journal_id)
        else:
            for start in range(0, len(deliveries), chunk):
                errors = apply_deliveries(svc, deliveries[start : start + chunk])
                assert errors == [None] * len(errors)
        return outcome(svc.engine, [delivery.journal_id for delivery in deliveries])
    finally:
        svc.engine.dispose()


def service_for(tmp_path: Path, database_url: str):
    settings = service.load_settings(
        {
            "DATABASE_URL": database_url,
            "CALLBACK_JOURNAL_PATH": str(tmp_path / "journal.log"),
            "CALLBACK_TOKEN": TOKEN,
            "API_KEYS": "test-key",
            # Events on (nothing delivers them here), so that the batches' events are compared.
            "EVENTS_URL": "http://127.0.0.1:9/events",
            "EVENTS_SECRET": "test-secret",
        },
        env_file=tmp_path / "no.env",
    )
    return service.build_service(settings, simulator_url="http://127.0.0.1:9")


def wipe(database_url: str) -> None:
    engine = service.make_engine(database_url)
    with engine.begin() as conn:
        for table in (
            events,
            payout_audit,
            payment_flags,
            b2c_payment_callbacks,
            callback_journal,
            b2c_payout_attempts,
            b2c_payments,
        ):
            conn.execute(table.delete())
    engine.dispose()


def test_batches_of_any_size_end_as_one_by_one_does(database_url, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mpesa")
    one_by_one = run(tmp_path, database_url, chunk=None)
    outcomes = {}
    for chunk in (len(DELIVERIES), 3, 2, 1):
        wipe(database_url)
        outcomes[chunk] = run(tmp_path, database_url, chunk)
    assert "failed together" not in caplog.text  # each batch was applied as a batch
    for chunk, found in outcomes.items():
        assert found == one_by_one, f"batches of {chunk} differ from one by one"
    by_reference = {row[0]: row for row in one_by_one["payouts"]}
    assert by_reference["ref-p1"][1:3] == ("completed", "R1")
    assert by_reference["ref-p3"][1] == "pending"  # R1 already paid p1: a conflict
    assert by_reference["ref-p5"][1:3] == ("completed", "R5")
    assert by_reference["ref-p7"][1:3] == ("completed", "R7")  # evidence beats belief
    assert by_reference["ref-p10"][1] == "pending"  # R9 belongs to p9
    assert by_reference["ref-p12"][1:3] == ("completed", "R12")
    assert {flag for _, flag, _ in one_by_one["flags"]} >= {
        "amount_mismatch",
        "status_conflict",
        "orphan_callback",
    }
    assert one_by_one["journal"] == list(range(len(DELIVERIES)))
    # One event per payout that moved, whichever path moved it (p9 was completed before).
    emitted = {(subject, kind.removeprefix("payout.")) for subject, kind, _ in one_by_one["events"]}
    moved = {row[:2] for row in one_by_one["payouts"] if row[1] != "pending"} - {
        ("ref-p9", "completed")
    }
    assert emitted == moved and len(one_by_one["events"]) == len(moved)
    assert ("ref-p4", "failed") in emitted


def test_the_batch_statements_compile_once_on_mariadb_only(engine):
    """On MariaDB the short path's statements run as driver SQL compiled once (the per-call
    SQLAlchemy work was a seventh of the writer's CPU); on SQLite, whose times need converting,
    they go through SQLAlchemy. A statement that stops compiling once (an expanding IN, say)
    would silently slow the writer down: this says so."""
    columns = ("transaction_id", "completed_at", "paid_amount")
    statements = [
        completing(3, columns),
        answering(3),
        matching(3),
        known_receipts(3),
        inserting(b2c_payment_callbacks, ("id", "journal_id", "received_at")),
        inserting(callback_journal, ("id", "kind", "state", "received_at", "applied_at")),
    ]
    forms = [driver_form(statement, engine.dialect) for statement in statements]
    if engine.dialect.name == "sqlite":
        assert forms == [None] * len(statements)
    else:
        assert all(forms)
        sql, own_values = forms[0]
        assert "POSTCOMPILE" not in sql
        assert own_values["status"] == "completed"


RELABEL = (
    callback_journal.update()
    .where(callback_journal.c.id == sa.bindparam("journal_id"))
    .values(kind=sa.bindparam("kind"))
)
BY_KIND = (
    sa.select(callback_journal.c.id, callback_journal.c.state)
    .where(callback_journal.c.kind == sa.bindparam("kind"))
    .order_by(callback_journal.c.id)
)


def journal_statements(ids: list[str]) -> list:
    now = utcnow()
    rows = [
        dict(id=journal_id, kind="b2c_result", state="applied", received_at=now, applied_at=now)
        for journal_id in ids
    ]
    return [
        (inserting(callback_journal, tuple(rows[0])), rows),
        (RELABEL, {"journal_id": ids[0], "kind": "b2c_timeout"}),
        (BY_KIND, {"kind": "b2c_result"}),
    ]


def test_statements_run_together_read_and_write_as_one_by_one(engine):
    """The writer's connection (one round trip for all of them, on MariaDB) and a pooled one
    (one statement at a time) give the same outcomes."""
    outcomes = []
    for source in (batch_engine(engine), engine):
        with source.connect() as conn, conn.begin():
            outcomes.append(run_together(conn, journal_statements(["rt-a", "rt-b", "rt-c"])))
            conn.rollback()
    assert outcomes[0] == outcomes[1]
    inserted, relabelled, read = outcomes[0]
    assert (inserted.rowcount, relabelled.rowcount) == (3, 1)
    assert [(row.id, row.state) for row in read.rows] == [("rt-b", "applied"), ("rt-c", "applied")]


def test_only_the_writers_connection_takes_several_statements_at_once(engine):
    if engine.dialect.name == "sqlite":
        assert batch_engine(engine) is engine
        return
    with batch_engine(engine).connect() as conn:
        assert conn.exec_driver_sql("SELECT 1; SELECT 2").scalar() == 1
    with engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError):
        conn.exec_driver_sql("SELECT 1; SELECT 2")  # stacked statements refused on the pool


def test_a_statement_failing_among_others_raises_as_sqlalchemy_would_and_writes_nothing(engine):
    statements = journal_statements(["rt-x", "rt-x"])  # the second row repeats the first key
    with batch_engine(engine).connect() as conn:
        with pytest.raises(sa.exc.IntegrityError) as raised, conn.begin():
            run_together(conn, statements)
        assert "rt-x" not in raised.value.statement  # the statement, not the values
        assert conn.execute(sa.select(sa.func.count()).select_from(callback_journal)).scalar() == 0


def test_only_the_leading_run_of_plain_successes_takes_the_short_path(engine):
    seed_scenario(engine)
    deliveries = [
        Journaled(kind, raw, f"journal-{index:02d}") for index, (kind, raw) in enumerate(DELIVERIES)
    ]
    with engine.begin() as conn:
        successes = SuccessBatch(conn, deliveries)
        taken = [successes.take(delivery) for delivery in deliveries]
        conn.rollback()
    # p1 and p2 qualify; p3 reuses R1, so it and everything after it go the general way.
    assert taken == [True, True] + [False] * (len(DELIVERIES) - 2)


def test_a_replay_that_got_there_first_is_not_applied_twice(database_url, tmp_path):
    svc = service_for(tmp_path, database_url)
    try:
        seed_scenario(svc.engine)
        deliveries = [
            Journaled("b2c_result", success("p1", "R1")[1], "journal-a"),
            Journaled("b2c_result", success("p2", "R2")[1], "journal-b"),
        ]
        with svc.engine.begin() as conn:  # the replay job got to journal-b a moment ago
            mark_journal_entries_applied(conn, [("journal-b", "b2c_result")])
        assert apply_deliveries(svc, deliveries) == [None, None]
        with svc.engine.connect() as conn:
            statuses = dict(conn.execute(sa.select(b2c_payments.c.id, b2c_payments.c.status)).all())
            stored = conn.execute(sa.select(b2c_payment_callbacks.c.journal_id)).scalars().all()
        assert statuses["id-p1"] == "completed"
        assert statuses["id-p2"] == "pending"  # not applied again here: the replay owns it
        assert stored == ["journal-a"]
    finally:
        svc.engine.dispose()


def kill_other_connections(engine) -> int:
    """Kill every server connection to this database but the asking one (a restart, as far as
    the pool's connections can tell); how many were killed."""
    with engine.connect() as conn:
        victims = conn.exec_driver_sql(
            "SELECT id FROM information_schema.processlist "
            "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
        ).all()
        for (victim,) in victims:
            conn.exec_driver_sql(f"KILL {int(victim)}")
        return len(victims)


def test_a_writer_whose_connection_dies_loses_nothing_and_takes_a_new_one(
    mariadb_url, tmp_path, caplog
):
    svc = service_for(tmp_path, mariadb_url)
    service.migrate(svc.engine)
    names = [f"k{number}" for number in range(6)]
    with svc.engine.begin() as conn:
        for name in names:
            seed(conn, name)
    pairs = [
        [Journaled("b2c_result", success(name, f"RK{name}")[1], f"journal-{name}") for name in two]
        for two in (names[0:2], names[2:4], names[4:6])
    ]
    try:
        with held_connection(svc.engine), caplog.at_level(logging.WARNING):
            assert apply_deliveries(svc, pairs[0]) == [None, None]
            killer = sa.create_engine(mariadb_url)
            assert kill_other_connections(killer) >= 1
            killer.dispose()
            assert apply_deliveries(svc, pairs[1]) == [None, None]  # each alone, on new ones
            assert apply_deliveries(svc, pairs[2]) == [None, None]  # together again
        with svc.engine.connect() as conn:
            statuses = conn.execute(sa.select(b2c_payments.c.status)).scalars().all()
        assert statuses == ["completed"] * 6
        fallbacks = [r for r in caplog.records if "failed together" in r.getMessage()]
        assert len(fallbacks) == 1  # only the batch that met the dead connection
    finally:
        svc.engine.dispose()


def test_a_payout_that_moves_after_being_read_fails_the_batch(engine):
    seed_scenario(engine)
    callback = Journaled(*success("p1", "R1"), "journal-x")
    with pytest.raises(PayoutMoved), engine.begin() as conn:
        successes = SuccessBatch(conn, [callback])
        conn.execute(
            b2c_payments.update().where(b2c_payments.c.id == "id-p1").values(status="failed")
        )
        assert successes.take(callback)
        successes.flush()
    with engine.connect() as conn:
        status = conn.execute(
            sa.select(b2c_payments.c.status).where(b2c_payments.c.id == "id-p1")
        ).scalar_one()
    assert status == "pending"  # the whole transaction was rolled back


def test_concurrent_deliveries_over_http_are_batched_and_all_applied(stack):
    with stack.svc.engine.begin() as conn:
        for number in range(32):
            seed(conn, f"h{number}")
    bodies = [json.loads(success(f"h{number}", f"RH{number:03d}")[1]) for number in range(32)]
    start = threading.Barrier(len(bodies))
    answers = []

    def deliver(body):
        start.wait()
        answers.append(stack.hook("/hooks/b2c/result", body).status_code)

    threads = [threading.Thread(target=deliver, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 32
    completed = stack.rows(b2c_payments, b2c_payments.c.status == "completed")
    assert sorted(row.transaction_id for row in completed) == [f"RH{n:03d}" for n in range(32)]
    assert stack.svc.callback_writer.largest_batch > 1
    assert len(stack.journal()) == 32


@contextlib.contextmanager
def payout_locked(engine, payout_id: str):
    """Hold the payout's row (MariaDB) or the database's write lock (SQLite: transactions take
    it when they begin), so that the callback writer waits."""
    with engine.begin() as conn:
        conn.execute(
            sa.select(b2c_payments.c.id).where(b2c_payments.c.id == payout_id).with_for_update()
        )
        yield


def payout_status(stack, payout_id: str) -> str:
    (row,) = stack.rows(b2c_payments, b2c_payments.c.id == payout_id)
    return row.status


def test_a_callback_is_answered_once_journaled_and_applied_when_the_database_lets_it(stack):
    with stack.svc.engine.begin() as conn:
        seed(conn, "held")
    body = json.loads(success("held", "RHELD0001")[1])
    with payout_locked(stack.svc.engine, "id-held"):
        response = requests.post(
            f"{stack.base_url}/hooks/b2c/result/{TOKEN}", json=body, timeout=10
        )
        assert response.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
        assert [entry["state"] for entry in stack.journal()] == ["received"]
        assert wait_applied(stack.svc, timeout=0.3) is False  # the writer is waiting
    assert wait_applied(stack.svc) is True
    assert payout_status(stack, "id-held") == "completed"


def test_the_legacy_callback_url_answers_only_once_the_callback_is_applied(stack):
    with stack.svc.engine.begin() as conn:
        seed(conn, "old")
    body = json.loads(success("old", "ROLD00001")[1])
    answers = []

    def deliver():
        url = f"{stack.base_url}/clientpaymentcallback.php?token={TOKEN}"
        answers.append(requests.post(url, json=body, timeout=30).json())

    thread = threading.Thread(target=deliver)
    with payout_locked(stack.svc.engine, "id-old"):
        thread.start()
        thread.join(0.5)
        assert answers == []  # journaled, but not applied, so not answered yet
    thread.join(10)
    assert answers[0]["success"] is True
    assert answers[0]["message"] == "Callback received and processed"
    assert payout_status(stack, "id-old") == "completed"
