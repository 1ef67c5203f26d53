"""Orderings of Daraja's answers, operators' decisions and jobs that once paid twice or un-paid a
paid collection, each as it was found (issue 20). Over real HTTP, with the simulator holding
its callbacks so that each test delivers them in the order it names, on SQLite and MariaDB.

The rule they hold the code to: evidence that money moved (a success result for any attempt,
or a status answer stating the transaction Completed with its receipt) beats every belief
that it did not."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

import service
from mpesa_service.callbacks import replay_journal
from mpesa_service.parsing import parse_result_callback
from mpesa_service.payouts import payout_by, settle_payout
from mpesa_service.resolution import resolve_payouts, retry_failed_payouts
from mpesa_service.stk import sweep_stk
from mpesa_service.storage import utcnow
from mpesa_service.throughput.writer import wait_applied
from tests.service_support import JOBS_WITHOUT_WAITS, wait_until
from tests.test_operator import KEYS, OPERATOR, as_key
from tests.test_payouts import result_body

B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
STATUS_PATH = "/mpesa/transactionstatus/v1/query"
STK_PATH = "/mpesa/stkpush/v1/processrequest"
STK_PRE = "/payments/mpesa/stk-"
AT_ONCE = {"API_KEYS": KEYS, **JOBS_WITHOUT_WAITS}
HELD = {"hold_callbacks": True, "callback_delay_seconds": 0, "stk_answer_delay_seconds": 0}


@pytest.fixture
def held(make_stack):
    """The service and a simulator that keeps every callback until the test delivers it."""
    return make_stack(AT_ONCE, **HELD)


def pay(stack, phone="0712345678", amount=1000, key=None, **extra):
    body = {"user_id": "trainer-1", "phone": phone, "amount": amount, **extra}
    headers = {"Idempotency-Key": key or str(uuid.uuid4())}
    return stack.post("/payouts", body, headers=headers)


def detail(stack, reference_id):
    return stack.get(f"/payouts/{reference_id}").json()


def held_index(stack, subject, purpose="result"):
    """The index of the newest held callback about `subject`."""
    found = [
        c["index"] for c in stack.sim.held() if (c["subject"], c["purpose"]) == (subject, purpose)
    ]
    assert found, f"no held {purpose} callback about {subject}: {stack.sim.held()}"
    return found[-1]


def deliver(stack, subject, purpose="result"):
    """Deliver the held callback about `subject` and wait until the service applied it."""
    entry = stack.sim.deliver(held_index(stack, subject, purpose))
    assert entry["status"] == 200, entry
    assert wait_applied(stack.svc)


def post_result(stack, body, kind="b2c/result"):
    assert stack.hook(f"/hooks/{kind}", body).status_code == 200


def ocids(stack, reference_id):
    return [a["originator_conversation_id"] for a in detail(stack, reference_id)["attempts"]]


def b2c_requests(stack):
    return stack.sim_requests(B2C_PATH)


def resolve(stack, reference_id, **body):
    return stack.post(f"/payouts/{reference_id}/resolve", body, headers=as_key(OPERATOR))


def unknown_payout(stack, processed=True):
    """A payout whose B2C answer proved nothing: Daraja processed it (a duplicate-id answer)
    or nothing reached M-Pesa (a 500 before acceptance)."""
    scenario = "duplicate_originator_id" if processed else "server_error_before_accept"
    stack.sim.arm(scenario, path=B2C_PATH)
    created = pay(stack).json()
    assert created["status"] == "unknown", created
    return created["reference_id"], created["originator_conversation_id"]


# --- 1. a success while `failed` completes the payout, and nothing is sent again -------------


def assert_completed_by_evidence(stack, reference_id, receipt):
    payout = detail(stack, reference_id)
    assert (payout["status"], payout["transaction_id"]) == ("completed", receipt)
    assert "status_conflict" in payout["flags"]
    assert any(entry["action"] == "evidence_of_payment" for entry in payout["history"])


def test_success_after_an_operators_not_paid_completes_and_is_never_retried(held):
    reference, ocid = unknown_payout(held, processed=True)
    answer = resolve(held, reference, outcome="not_paid", note="not on the statement yet")
    assert answer.json()["status"] == "failed"
    deliver(held, ocid)
    (paid,) = held.sim.ledger()
    assert_completed_by_evidence(held, reference, paid["receipt"])
    assert retry_failed_payouts(held.svc) == 0
    assert len(b2c_requests(held)) == 1


def test_success_after_a_retryable_failure_for_the_same_attempt_is_never_retried(held):
    created = pay(held, phone="254711000026").json()  # b2c_system_busy: result 26, retryable
    deliver(held, created["originator_conversation_id"])
    assert detail(held, created["reference_id"])["status"] == "failed"
    post_result(held, result_body(created["originator_conversation_id"], receipt="TK26PAIDAA"))
    assert_completed_by_evidence(held, created["reference_id"], "TK26PAIDAA")
    assert retry_failed_payouts(held.svc) == 0
    assert len(b2c_requests(held)) == 1


def test_success_after_no_such_transaction_is_never_retried(held):
    reference, ocid = unknown_payout(held, processed=False)
    resolve_payouts(held.svc)
    deliver(held, ocid)  # the status answer: 404, never received
    assert detail(held, reference)["status"] == "failed"
    post_result(held, result_body(ocid, receipt="TK404FOUND"))
    assert_completed_by_evidence(held, reference, "TK404FOUND")
    assert retry_failed_payouts(held.svc) == 0
    assert len(b2c_requests(held)) == 1


def test_a_failure_of_attempt_two_after_attempt_one_was_proven_paid_sends_no_third(held):
    reference, first = unknown_payout(held, processed=True)
    resolve(held, reference, outcome="not_paid", note="operator believed it unpaid")
    held.sim.arm("b2c_system_busy", path=B2C_PATH)  # attempt 2 fails with a retryable code
    assert retry_failed_payouts(held.svc) == 1
    second = ocids(held, reference)[-1]
    deliver(held, first)  # attempt 1 was paid after all
    deliver(held, second)  # attempt 2 failed
    payout = detail(held, reference)
    assert payout["status"] == "completed"
    assert retry_failed_payouts(held.svc) == 0
    assert len(b2c_requests(held)) == 2


# --- 2. a paid collection keeps its receipt, amount and status --------------------------------


def test_a_push_answer_timing_out_after_its_callback_paid_keeps_the_payment_paid(make_stack):
    stack = make_stack({**AT_ONCE, "DARAJA_TIMEOUT_SECONDS": "1"}, **HELD, hang_seconds=1.5)
    stack.sim.arm("accepted_no_response", path=STK_PATH)
    body = {"phone": "0708374149", "amount": 150, "account_reference": "INV1"}
    answers = []
    pushing = threading.Thread(
        target=lambda: answers.append(stack.post(STK_PRE + "initiate", body))
    )
    pushing.start()
    wait_until(lambda: [c for c in stack.sim.held() if c["purpose"] == "stk_callback"])
    (callback,) = stack.sim.held()
    assert stack.sim.deliver(callback["index"])["status"] == 200
    assert wait_applied(stack.svc)
    pushing.join()
    assert answers[0].status_code == 504
    payment_id = answers[0].json()["payment_id"]
    (paid,) = stack.sim.ledger()
    sweep_stk(stack.svc)
    (row,) = stack.rows(service.payments, service.payments.c.id == payment_id)
    assert (row.status, row.mpesa_receipt, row.paid_amount) == ("completed", paid["receipt"], 150)


# --- 3. only an answer stating the transaction's status decides --------------------------------


def status_answer_for(stack, ocid):
    resolve_payouts(stack.svc)
    return held_index(stack, ocid)


def test_a_status_answer_with_code_zero_but_no_transaction_status_decides_nothing(held):
    reference, ocid = unknown_payout(held, processed=True)
    held.sim.arm("status_without_details", path=STATUS_PATH)
    resolve_payouts(held.svc)
    deliver(held, ocid)
    payout = detail(held, reference)
    assert (payout["status"], payout["transaction_id"]) == ("unknown", None)


@pytest.mark.parametrize("code", ["1", "2", "3", "4", "8", "11", "2040", "SFC_IC0003", "2001"])
def test_a_status_answer_about_the_query_itself_is_asked_again_never_failed(held, code):
    reference, ocid = unknown_payout(held, processed=True)
    answer = held.sim.held_body(status_answer_for(held, ocid))
    answer["Result"].update(ResultCode=code, ResultDesc="about the query")
    answer["Result"].pop("ResultParameters", None)
    post_result(held, answer, "status/result")
    assert detail(held, reference)["status"] == "unknown"
    resolve_payouts(held.svc)
    assert len(held.sim_requests(STATUS_PATH)) == 2


def test_a_status_answer_stored_before_its_query_had_ids_is_applied_by_the_next_pass(held):
    """The lost wake-up: the answer arrived while its query was being recorded (no ids yet,
    so it waits as an orphan) and committed only after the query had looked for answers
    waiting on its ids. The resolve job's next pass applies it instead of asking again."""
    reference, ocid = unknown_payout(held, processed=True)
    status_answer_for(held, ocid)
    (query,) = held.rows(service.status_queries)
    queries = service.status_queries
    with held.svc.engine.begin() as conn:  # the query as it was while its answer was on its way
        conn.execute(
            queries.update().values(
                status="sending", originator_conversation_id=None, conversation_id=None
            )
        )
    deliver(held, ocid)
    (waiting,) = held.rows(
        service.b2c_payment_callbacks, service.b2c_payment_callbacks.c.kind == "status"
    )
    assert waiting.outcome == "orphan"
    with held.svc.engine.begin() as conn:  # its ids stored; its look for waiting answers done
        conn.execute(
            queries.update().values(
                status="sent",
                originator_conversation_id=query.originator_conversation_id,
                conversation_id=query.conversation_id,
            )
        )
    resolve_payouts(held.svc)
    payout = detail(held, reference)
    assert (payout["status"], payout["transaction_id"]) == (
        "completed",
        held.sim.ledger()[0]["receipt"],
    )
    assert [row.status for row in held.rows(service.status_queries)] == ["answered"]
    assert len(held.sim_requests(STATUS_PATH)) == 1


# --- 4. one payout per reference_id -------------------------------------------------------------


def test_a_second_payout_with_a_used_reference_is_409_and_not_sent(held):
    first = pay(held, reference_id="INV-2026-0001")
    assert first.status_code == 201
    second = pay(held, reference_id="INV-2026-0001", amount=2000)
    assert second.status_code == 409
    assert "INV-2026-0001" in second.json()["error"]
    assert len(b2c_requests(held)) == 1


def test_requests_queued_behind_a_key_that_is_rolled_back_get_one_payout_no_503(held):
    """Found by the money model on MariaDB: when the transaction holding a key rolls back (its
    request was answered 409 or 422), two requests waiting to insert the same key deadlock,
    and the loser was answered 503. Here the first holder is a transaction of the test's own."""
    keys = service.idempotency_keys
    with held.svc.engine.connect() as blocker:
        holding = blocker.begin()
        blocker.execute(
            keys.insert().values(
                idempotency_key="k-queued",
                scope="payout",
                request_hash="0" * 64,
                created_at=utcnow(),
            )
        )
        answers = []
        threads = [
            threading.Thread(target=lambda: answers.append(pay(held, key="k-queued")))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        time.sleep(1)  # all three wait on the key the blocker holds
        holding.rollback()
        for thread in threads:
            thread.join()
    assert sorted(answer.status_code for answer in answers) == [200, 200, 201]
    assert len({answer.json()["reference_id"] for answer in answers}) == 1
    assert len(b2c_requests(held)) == 1


def fresh_read(conn, query):
    """The first value `query` reads in a transaction of its own (a new snapshot each time)."""
    value = conn.execute(query).scalar()
    conn.rollback()
    return value


@pytest.fixture
def mariadb_slow_answers(mariadb_url, tmp_path):
    """The service on MariaDB (the deadlock below is InnoDB's) with a simulator whose B2C
    answers take a second."""
    from tests.service_support import start_stack

    engine = service.make_engine(mariadb_url)
    service.migrate(engine)
    engine.dispose()
    stack, stop = start_stack(mariadb_url, tmp_path, AT_ONCE, {**HELD, "slow_answer_seconds": 1.0})
    stack.sim.arm("slow_answer", path=B2C_PATH)
    yield stack
    stop()


def test_recording_an_accepted_answer_survives_a_deadlock_with_a_result(mariadb_slow_answers):
    """Found by the money model on MariaDB: a result applied while the answer was recorded
    (they lock the payout and its attempt in opposite orders) made the payout's creation the
    deadlock's victim, answered 503 though Daraja had accepted it. Here the other transaction is
    the test's own: heavier, so InnoDB rolls back the service's; it must run again."""
    stack = mariadb_slow_answers
    answers = []
    paying = threading.Thread(target=lambda: answers.append(pay(stack)))
    paying.start()
    payouts, attempts = service.b2c_payments, service.b2c_payout_attempts
    with stack.svc.engine.connect() as blocker:
        payout_id = wait_until(lambda: fresh_read(blocker, sa.select(payouts.c.id)))
        holding = blocker.begin()
        for number in range(30):  # weight, so that InnoDB picks the service as the victim
            blocker.execute(
                service.idempotency_keys.insert().values(
                    idempotency_key=f"weight-{number}",
                    scope="payout",
                    request_hash="0" * 64,
                    created_at=utcnow(),
                )
            )
        blocker.execute(
            payouts.update().where(payouts.c.id == payout_id).values(updated_at=utcnow())
        )
        time.sleep(1.5)  # the answer came; the service holds the attempt, waits for the payout
        blocker.execute(
            attempts.update().where(attempts.c.payout_id == payout_id).values(error_message="x")
        )
        holding.rollback()
    paying.join()
    assert answers[0].status_code == 201, answers[0].text
    assert detail(stack, answers[0].json()["reference_id"])["status"] == "pending"


def test_migrate_names_references_shared_by_payouts_and_stops(empty_database_url):
    from alembic import command

    from mpesa_service.storage import alembic_config

    engine = service.make_engine(empty_database_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0004")
        for payout_id in ("p-1", "p-2", "p-3"):
            conn.execute(
                sa.text("INSERT INTO b2c_payments (id, reference_id, amount) VALUES (:i, :r, 10)"),
                {"i": payout_id, "r": "shared-ref" if payout_id != "p-3" else "own-ref"},
            )
    with pytest.raises(RuntimeError, match="'shared-ref' \\(2 payouts\\)"):
        service.migrate(engine)
    assert service.schema_revision(engine) == "0004"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM b2c_payments")).scalar() == 3
    engine.dispose()


# --- 5. the daily limits hold under concurrent payouts ---------------------------------------


def test_concurrent_payouts_never_pass_the_users_daily_limit(make_stack):
    stack = make_stack({"PAYOUT_USER_DAILY_LIMIT": "1000"})
    barrier = threading.Barrier(8)
    answers = []

    def one(n):
        barrier.wait()
        answers.append(pay(stack, amount=300, key=f"limit-{n}").status_code)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [201] * 3 + [422] * 5
    assert len(b2c_requests(stack)) == 3


def test_a_failed_payout_is_not_retried_past_the_users_daily_limit(make_stack):
    """Found by the money model: a failed payout stops counting, another takes the room, and
    the retry would have passed the limit."""
    stack = make_stack({**AT_ONCE, "PAYOUT_USER_DAILY_LIMIT": "1000"}, **HELD)
    first = pay(stack, phone="254711000026", amount=600).json()  # result 26: retryable
    deliver(stack, first["originator_conversation_id"])
    assert pay(stack, amount=500).status_code == 201
    assert retry_failed_payouts(stack.svc) == 0
    assert detail(stack, first["reference_id"])["status"] == "failed"
    assert len(b2c_requests(stack)) == 2


# --- 6. a result moves the payout only while its attempt is the current one -------------------


def test_an_accepted_answer_does_not_undo_a_result_that_came_first(make_stack):
    stack = make_stack(AT_ONCE, **HELD, slow_answer_seconds=1.0)
    stack.sim.arm("slow_answer", path=B2C_PATH)
    answers = []
    paying = threading.Thread(target=lambda: answers.append(pay(stack).json()))
    paying.start()
    wait_until(lambda: stack.sim.held())
    (result,) = stack.sim.held()
    deliver(stack, result["subject"])
    paying.join()
    payout = detail(stack, answers[0]["reference_id"])
    assert payout["status"] == "completed"
    assert [a["status"] for a in payout["attempts"]] == ["completed"]


def test_a_failure_read_against_attempt_one_does_not_fail_attempt_two(held):
    created = pay(held, phone="254711000026").json()
    first = created["originator_conversation_id"]
    deliver(held, first)
    with held.svc.engine.connect() as conn:
        as_read = payout_by(conn, service.b2c_payments.c.id, first_payout_id(held, created))
    assert retry_failed_payouts(held.svc) == 1  # attempt 2 is now current
    failure = parse_result_callback(result_body(first, code=26))
    with held.svc.engine.begin() as conn:
        attempt = attempt_row(conn, first)
        assert settle_payout(conn, as_read, attempt, failure) != "applied"
    assert detail(held, created["reference_id"])["status"] == "pending"


def first_payout_id(stack, created):
    (row,) = stack.rows(
        service.b2c_payments, service.b2c_payments.c.reference_id == created["reference_id"]
    )
    return row.id


def attempt_row(conn, ocid):
    attempts = service.b2c_payout_attempts
    return conn.execute(
        sa.select(attempts).where(attempts.c.originator_conversation_id == ocid)
    ).one()


# --- 7. a code that looks like digits but is not one is stored, once --------------------------


def test_a_result_code_of_superscript_two_is_stored_and_not_replayed_for_ever(held):
    created = pay(held).json()
    body = result_body(created["originator_conversation_id"], code=2001)
    body["Result"]["ResultCode"] = "\u00b2"
    post_result(held, body)
    (stored,) = held.rows(
        service.b2c_payment_callbacks,
        service.b2c_payment_callbacks.c.originator_conversation_id
        == created["originator_conversation_id"],
    )
    assert (stored.result_code, stored.result_code_text) == (None, "\u00b2")
    assert replay_journal(held.svc) == 0


# --- 8. an STK push is idempotent on its key ----------------------------------------------------


def push(stack, key, amount=150):
    body = {"phone": "0708374149", "amount": amount, "account_reference": "INV1"}
    return stack.post(STK_PRE + "initiate", body, headers={"Idempotency-Key": key})


def test_the_same_push_key_and_body_replay_the_first_answer_and_prompt_once(held):
    first, again = push(held, "stk-k1"), push(held, "stk-k1")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert len(held.sim_requests(STK_PATH)) == 1


def test_the_same_push_key_with_another_body_is_409(held):
    push(held, "stk-k2")
    assert push(held, "stk-k2", amount=200).status_code == 409
    assert len(held.sim_requests(STK_PATH)) == 1


def test_concurrent_pushes_with_one_key_prompt_once(held):
    barrier = threading.Barrier(6)
    answers = []

    def one():
        barrier.wait()
        answers.append(push(held, "stk-k3"))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(held.sim_requests(STK_PATH)) == 1
    assert len({answer.json()["payment_id"] for answer in answers}) == 1


def test_a_push_key_used_for_a_payout_is_409(held):
    pay(held, key="shared-key")
    assert push(held, "shared-key").status_code == 409
    assert held.sim_requests(STK_PATH) == []
