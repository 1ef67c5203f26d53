"""A model of the money: a stateful property test (Hypothesis) of payouts and collections.

Hypothesis plays Daraja, the platform calling the API, the operators, the jobs and the
machine the service runs on, in any order: payouts and STK pushes initiated (keys repeated, a
body changed, one key sent by three callers at once); Daraja answering each request in every
way it can (paid, failed, refused, a 500, a reset or a timeout after processing, a duplicate
id, a queue timeout); the simulator holding every callback (results, queue timeouts, status
answers, STK callbacks) until a rule delivers one, again, late or out of order, and Daraja
contradicting itself; status answers of every kind (completed, declined, not found, about the
query itself, with no details, never); operators resolving paid, not paid or acknowledging;
every job (resolve, retry, sweep, replay, approval expiry); a crash between any two steps, while
a payout is being sent, or after a callback was journaled and before it was applied; payouts
above APPROVAL_ABOVE asked for, then approved (by another operator's key, or refused to the
key that asked), rejected or left to expire; an operator reversing a paid collection (once,
twice, three times at once, retrying, or crashing while Daraja has it), however Daraja answers,
someone reversing it in the org portal first, and the reversal resolve job.

The real service runs over real HTTP against the simulator, on SQLite and MariaDB. Beside it
a simple model keeps what is true and what the service was told, and after every step:
  1. no payout gets a new attempt once the service holds evidence that it was paid;
  2. money moved at most once per payout, unless a wrong belief the model can name (an
     operator's "not paid", a failure Daraja sent for a transaction that paid) let a new
     attempt out before any evidence arrived;
  3. a payout once completed is never unpaid again (`review` only after a double payment);
  4. a paid collection keeps its receipt, paid amount and status;
  5. every callback the service acknowledged is stored and marked applied;
  6. the API's status agrees with the evidence: one paid attempt is `completed` with its
     receipt, two are `review` flagged `possible_double_payout`; no evidence and no
     operator's "paid" is never `completed`; a collection whose success was delivered is paid
     with that receipt;
  7. a payout not approved is never sent (no attempt, nothing in Daraja's ledger), so a
     rejected or expired one is never paid; an approval is applied at most once per payout
     and sends one request;
  8. a collection's money goes back at most once (the simulator's ledger), and each reversal
     attempt is sent at most once, a new one only after the last one failed (never while one
     is open, never after one completed); a collection shown `reversed` has exactly one
     completed reversal, whose receipt it shows and whose money the simulator moved; one
     whose reversal result (or status answer) was delivered and applied is shown `reversed`
     with that receipt, never merely paid.

CI runs a small budget on each database; `make verify` runs MONEY_MODEL_EXAMPLES (2,000) per
database and prints the figures. docs/evidence.md says what it found."""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

import service
import simulator
from mpesa_service import idempotency
from mpesa_service import reversals as reversing
from mpesa_service.approval import expire_approvals
from mpesa_service.batches import send_batches
from mpesa_service.callbacks import replay_journal
from mpesa_service.context import ApiError
from mpesa_service.payouts import (
    PayoutRequest,
    payout_phone,
    post_attempt,
    write_ahead,
)
from mpesa_service.resolution import resolve_payouts, retry_failed_payouts
from mpesa_service.routes import CALLBACK_PATHS, NAMING_KINDS
from mpesa_service.stk import (
    STK_PAID_STATES,
    StkRequest,
    payment_row_view,
    sweep_stk,
    write_payment_ahead,
)
from mpesa_service.storage import reversal_callbacks, utcnow
from mpesa_service.storage import reversals as reversal_rows
from mpesa_service.throughput.writer import wait_applied
from recon.rules import nairobi_day_start_utc
from tests import http_support
from tests.service_support import JOBS_WITHOUT_WAITS, TOKEN
from tests.test_operator import KEYS, OPERATOR, as_key
from tests.test_payouts import result_body

EXAMPLES = int(os.environ.get("MONEY_MODEL_EXAMPLES", "15"))
STEPS = int(os.environ.get("MONEY_MODEL_STEPS", "30"))
B2C_PATH, STK_PATH = simulator.B2C_V3_PATH, simulator.STK_PUSH_PATH
STATUS_PATH, REVERSAL_PATH = simulator.STATUS_PATH, simulator.REVERSAL_PATH
TIMEOUT = 0.2  # DARAJA_TIMEOUT_SECONDS
STUCK = 0.25  # SUBMITTING_STUCK_AFTER_SECONDS
SHARED_REFERENCE = "INV-SHARED"
LIMIT, BURST_AMOUNT, BURST_USER = 1000, 400, "trainer-burst"  # PAYOUT_USER_DAILY_LIMIT
# Payouts above APPROVAL_ABOVE wait for approval: none of the other rules' amounts is.
APPROVAL_ABOVE, APPROVAL_AMOUNT = 500, 600
MAKER = "maker-secret-1"  # a key that may both ask for payouts and approve them
MAKERS = ("test-key", MAKER)
APPROVAL_USERS = ("trainer-approval", BURST_USER)
SETTINGS = {
    "API_KEYS": f"{KEYS},maker:initiate+operator+read:{MAKER}",
    "APPROVAL_ABOVE": str(APPROVAL_ABOVE),
    "CALLBACK_TOKEN": TOKEN,
    "DARAJA_TIMEOUT_SECONDS": str(TIMEOUT),
    "SUBMITTING_STUCK_AFTER_SECONDS": str(STUCK),
    **JOBS_WITHOUT_WAITS,
    "STK_EXPIRY_SECONDS": "0",
    "PAYOUT_USER_DAILY_LIMIT": str(LIMIT),
    # The pace between a batch's rows is no part of what the model checks (each row sent at
    # most once); at the default 2 a second every batch sent would only wait.
    "BULK_PAYOUTS_PER_SECOND": "1000",
}
# How Daraja answers a B2C request: (scenario armed for it, seconds the answer is held back).
B2C_ANSWERS = {
    "paid": ("success", 0),
    "paid_short": ("amount_mismatch", 0),
    "failed_busy": ("b2c_system_busy", 0),  # 26: worth a new attempt
    "failed_funds": ("b2c_insufficient_funds", 0),
    "refused": ("spike_arrest", 0),
    "server_error": ("server_error_before_accept", 0),
    "reset_after_processing": ("accepted_no_response", 0),
    "timeout_after_processing": ("accepted_no_response", TIMEOUT + 0.1),
    "duplicate_id": ("duplicate_originator_id", 0),
    "queue_timeout": ("queue_timeout", 0),
    "queue_timeout_never": ("queue_timeout_never", 0),
}
STK_ANSWERS = {
    "paid": ("success", 0),
    "paid_short": ("amount_mismatch", 0),
    "cancelled": ("stk_cancelled", 0),
    "refused": ("spike_arrest", 0),
    "server_error": ("server_error_before_accept", 0),
    "reset_after_processing": ("accepted_no_response", 0),
    "timeout_after_processing": ("accepted_no_response", TIMEOUT + 0.1),
}
# How Daraja answers a Reversal request. Its refusals as results (R000001) come from the
# portal rule; a spike arrest proves nothing was sent (failed, so it may be retried).
REVERSAL_ANSWERS = {
    "reversed": ("success", 0),
    "result_twice": ("callback_twice", 0),
    "result_dropped": ("callback_dropped", 0),
    "queue_timeout": ("queue_timeout", 0),
    "queue_timeout_never": ("queue_timeout_never", 0),
    "refused": ("spike_arrest", 0),
    "server_error": ("server_error_before_accept", 0),
    "reset_after_processing": ("accepted_no_response", 0),
    "timeout_after_processing": ("accepted_no_response", TIMEOUT + 0.1),
}
REVERSED_SHOWN = (*STK_PAID_STATES, "reversed")
STATUS_ANSWERS = {
    "the truth": None,
    "about the query": "status_initiator_invalid",
    "without details": "status_without_details",
    "never": "queue_timeout_never",
}
KEYS_USED = ("key-a", "key-b", "key-c", "key-d")
# Which of the payouts or callbacks there are: drawn whatever there is, so that a replayed
# example draws the same data even if timing changed what there is.
PICK = st.integers(0, 255)
# The body a key is sent with: mostly the same one again (a replay), sometimes another (a 409),
# sometimes the one with the shared reference_id.
VARIANT = st.sampled_from([0, 0, 0, 1, 2])
KINDS_BY_PATH = {path: kind for kind, path in CALLBACK_PATHS.items()}


def payout_body(variant: int, user: str = "trainer-1") -> dict:
    """Two plain bodies; the third carries a reference_id every key that sends it shares."""
    body = {"user_id": user, "phone": "0712345678", "amount": 100 * (variant + 1)}
    return {**body, "reference_id": SHARED_REFERENCE} if variant == 2 else body


def stk_body(variant: int) -> dict:
    return {"phone": "0708374149", "amount": 50 * (variant + 1), "account_reference": "INV7"}


@dataclass
class Truth:
    """What the model knows: what happened, and what the service was told."""

    evidence: dict = field(default_factory=dict)  # payout id -> {receipts delivered}
    attempts_at_evidence: dict = field(default_factory=dict)  # payout id -> {its OCIDs then}
    excused: set = field(default_factory=set)  # payouts a wrong belief may have paid twice
    operator_paid: set = field(default_factory=set)
    double_resolved: set = field(default_factory=set)
    ever_completed: set = field(default_factory=set)
    stk_evidence: dict = field(default_factory=dict)  # payment id -> receipt delivered
    stk_paid: dict = field(default_factory=dict)  # payment id -> (receipt, paid amount)
    references: list = field(default_factory=list)  # the payouts made, oldest first
    payout_keys: dict = field(default_factory=dict)  # key -> (variant, first answer)
    stk_keys: dict = field(default_factory=dict)  # key -> (variant, first status, answer)
    asked_by: dict = field(default_factory=dict)  # reference awaiting approval -> maker's secret
    approvals: Counter = field(default_factory=Counter)  # reference -> approvals answered 200
    reversal_evidence: dict = field(default_factory=dict)  # payment id -> reversal receipt


class World:
    """A simulator (holding callbacks), the migrated database and a restartable service, made
    afresh for every example."""

    def __init__(self, database_url: str, workdir: Path):
        self.database_url = database_url
        self.journal_path = workdir / "b2c_callbacks.log"
        self.daraja = self.sim = self.svc = self.serving = self.http = None
        self.figures: Counter = Counter()
        # The model's own reads outlive every service it restarts: one pool, not a new
        # connection (on MariaDB, a TLS context and a ping) after each restart.
        self.engine = service.make_engine(database_url)
        self.reads: dict | None = None
        self.reading: sa.Connection | None = None

    def fresh(self) -> None:
        """An empty database and journal, a new simulator, and a service started on them. The
        last example's service is stopped only once its requests are done, and its simulator
        stopped, so that nothing it left running can reach this example."""
        self.stop_service()
        if self.daraja is not None:
            self.daraja.stop()
        with self.engine.begin() as conn:
            for table in reversed(service.metadata.sorted_tables):
                conn.execute(table.delete())
        self.journal_path.write_bytes(b"")
        config = simulator.SimulatorConfig(
            hold_callbacks=True, callback_delay_seconds=0, stk_answer_delay_seconds=0
        )
        self.daraja = simulator.start(config=config)
        self.sim = self.daraja.simulator
        self.started_at = utcnow().isoformat()
        self.start_service()

    def start_service(self) -> None:
        environ = {
            "DATABASE_URL": self.database_url,
            "CALLBACK_JOURNAL_PATH": str(self.journal_path),
            **SETTINGS,
        }
        loaded = service.load_settings(environ, env_file=self.journal_path.parent / "no.env")
        self.svc = service.build_service(loaded, simulator_url=self.daraja.base_url)
        self.serving = http_support.serving(service.make_app(self.svc), threads=8, drain_seconds=60)
        self.svc.public_base_url = self.base_url = self.serving.__enter__()
        self.http = keep_alive_session()

    def stop_service(self) -> None:
        if self.svc is None:
            return
        wait_applied(self.svc)
        self.http.close()
        self.serving.__exit__(None, None, None)
        self.svc.engine.dispose()
        self.svc = self.serving = None

    def restart(self) -> None:
        """The process dies and starts again: nothing in memory survives; start-up replays the
        journal, as `python service.py` does."""
        self.stop_service()
        self.start_service()
        replay_journal(self.svc)

    def close(self) -> None:
        self.stop_service()
        if self.daraja is not None:
            self.daraja.stop()
        self.engine.dispose()

    # --- talking to the service -----------------------------------------------------------

    def post(self, path: str, body: dict, key: str | None = None, secret: str = "test-key"):
        headers = as_key(secret)
        if key:
            headers["Idempotency-Key"] = key
        return self.http.post(self.base_url + path, json=body, headers=headers, timeout=30)

    def payout(self, reference_id: str) -> dict:
        answer = self.http.get(
            f"{self.base_url}/payouts/{reference_id}", headers=as_key(OPERATOR), timeout=30
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def rows(self, table: sa.Table, *conditions) -> list:
        statement = sa.select(table).where(*conditions)
        if self.reads is None:
            with self.engine.connect() as conn:
                return conn.execute(statement).all()
        compiled = statement.compile(self.engine)
        key = (str(compiled), repr(compiled.params))
        if key not in self.reads:
            self.reads[key] = self.reading.execute(statement).all()
            self.reading.rollback()  # on SQLite a read holds the write lock until it ends
        return list(self.reads[key])

    @contextlib.contextmanager
    def reading_once(self):
        """Inside, each distinct read is made once, on one connection: the checks after a step
        all read the state that step left, without a round trip per check."""
        with self.engine.connect() as self.reading:
            self.reads = {}
            try:
                yield self.reading
            finally:
                self.reads = self.reading = None

    def arm(self, scenario: str | None, path: str, hang: float = 0, times: int = 1) -> None:
        self.sim.clear_scenarios()
        self.sim.config.hang_seconds = hang
        if scenario:
            self.sim.arm(scenario, times=times, path=path)

    def deliver(self, index: int) -> dict:
        """Deliver held callback `index` to this service (its URL may name one that died)."""
        held = self.sim.held()[index]
        entry = self.sim.deliver(index, url=self.base_url + urlsplit(held["url"]).path)
        assert wait_applied(self.svc), "callbacks still being applied after 10 s"
        return {**held, **entry}


class MoneyModel(RuleBasedStateMachine):
    world: World  # set by the test

    def __init__(self):
        super().__init__()
        self.world.fresh()
        self.truth = Truth()

    @property
    def svc(self):
        return self.world.svc

    # --- payouts ------------------------------------------------------------------------------

    @rule(
        key=st.sampled_from(KEYS_USED),
        variant=VARIANT,
        answer=st.sampled_from(sorted(B2C_ANSWERS)),
    )
    def initiate_payout(self, key, variant, answer):
        self.world.arm(*self._b2c_scenario(answer))
        response = self.world.post("/payouts", payout_body(variant, key), key)
        self.world.sim.clear_scenarios()
        self._check_payout_answer(key, variant, response)
        self.world.figures[f"payout answered {response.status_code}"] += 1

    @rule(key=st.sampled_from(KEYS_USED), variant=VARIANT)
    def initiate_payout_three_times_at_once(self, key, variant):
        before = len(self.world.sim.requests(B2C_PATH))
        body = payout_body(variant, key)
        responses = self._at_once(3, lambda: self.world.post("/payouts", body, key))
        for response in sorted(responses, key=lambda r: r.status_code != 201):
            self._check_payout_answer(key, variant, response)
        assert len(self.world.sim.requests(B2C_PATH)) - before <= 1, "one key sent twice"

    @rule(answer=st.sampled_from(sorted(B2C_ANSWERS)))
    def three_payouts_for_one_user_at_once(self, answer):
        """Three keys, one user, each payout alone within PAYOUT_USER_DAILY_LIMIT, together
        over it: the limit holds however they interleave."""
        scenario, hang = B2C_ANSWERS[answer]
        self.world.arm(scenario, B2C_PATH, hang, times=3)
        room = max(0, LIMIT - self._counted_today(BURST_USER))
        body = {"user_id": BURST_USER, "phone": "0712345678", "amount": BURST_AMOUNT}
        keys = iter([f"burst-{uuid.uuid4().hex[:8]}" for _ in range(3)])
        lock = threading.Lock()

        def one():
            with lock:
                key = next(keys)
            return self.world.post("/payouts", body, key)

        responses = self._at_once(3, one)
        self.world.sim.clear_scenarios()
        made = [r for r in responses if r.status_code == 201]
        assert {r.status_code for r in responses} <= {201, 422}, [r.text for r in responses]
        # One refused at once (failed) stops counting, and makes room for the next.
        counted = [r for r in made if r.json()["status"] != "failed"]
        assert len(counted) * BURST_AMOUNT <= room, "the daily limit was passed"
        self.truth.references += [r.json()["reference_id"] for r in made]

    @rule(variant=st.integers(0, 1))
    def payout_whose_result_beats_its_answer(self, variant):
        """Daraja answers slowly; the result callback arrives (and is applied) first."""
        self.world.sim.config.slow_answer_seconds = TIMEOUT / 2
        self.world.arm("slow_answer", B2C_PATH)
        key = f"slow-{uuid.uuid4().hex[:8]}"
        answer = self._delivering_while(
            lambda: self.world.post("/payouts", payout_body(variant, key), key), "result"
        )
        assert answer.status_code == 201, answer.text
        self.truth.references.append(answer.json()["reference_id"])

    @rule(variant=st.integers(0, 1), processed=st.booleans())
    def crash_while_sending_a_payout(self, variant, processed):
        """The process dies after Daraja got the request and before its answer was stored."""
        world, key = self.world, f"crash-{uuid.uuid4().hex[:8]}"
        body = payout_body(variant, key)
        request = PayoutRequest.from_body(body, payout_phone(self.svc, body))
        payout_id, attempt = write_ahead(self.svc, request, key, idempotency.fingerprint(body))
        (payout,) = world.rows(service.b2c_payments, service.b2c_payments.c.id == payout_id)
        self.truth.references.append(payout.reference_id)
        world.arm(None if processed else "server_error_before_accept", B2C_PATH)
        with contextlib.suppress(Exception):  # whatever Daraja said, nobody recorded it
            post_attempt(self.svc, payout_id, attempt)
        world.sim.clear_scenarios()
        world.restart()

    @rule()
    def time_passes(self):
        """Long enough for the payouts left `submitting` by a crash to count as stuck."""
        since = self._submitting_since()
        if since is not None:
            time.sleep(max(0.0, STUCK - (utcnow() - since).total_seconds()))

    # --- maker-checker ------------------------------------------------------------------------

    @rule(maker=st.sampled_from(MAKERS), user=st.sampled_from(APPROVAL_USERS), twice=st.booleans())
    def ask_for_a_payout_needing_approval(self, maker, user, twice):
        """Above APPROVAL_ABOVE: it waits, nothing is sent; the same key again answers it."""
        before, key = len(self.world.sim.requests(B2C_PATH)), f"appr-{uuid.uuid4().hex[:8]}"
        body = {"user_id": user, "phone": "0712345678", "amount": APPROVAL_AMOUNT}
        room = LIMIT - self._counted_today(user)
        first = self.world.post("/payouts", body, key, secret=maker)
        assert first.status_code == (201 if room >= APPROVAL_AMOUNT else 422), first.text
        assert len(self.world.sim.requests(B2C_PATH)) == before, "sent before approval"
        self.world.figures[f"approval asked, answered {first.status_code}"] += 1
        if first.status_code != 201:
            return
        reference = first.json()["reference_id"]
        assert first.json()["status"] == "awaiting_approval"
        self.truth.asked_by[reference] = maker
        self.truth.references.append(reference)
        if twice:
            again = self.world.post("/payouts", body, key, secret=maker)
            assert (again.status_code, again.json()) == (200, first.json())

    @rule(pick=PICK, by_maker=st.booleans(), answer=st.sampled_from(sorted(B2C_ANSWERS)))
    def operator_approves(self, pick, by_maker, answer):
        """By another operator's key it is sent once, however Daraja answers; by the key
        that asked for it (or once decided, expired) it is refused and nothing is sent."""
        reference = self._asked(pick)
        if reference is None:
            return
        secret = self.truth.asked_by[reference] if by_maker else OPERATOR
        was = self._status_of(reference)
        before = len(self.world.sim.requests(B2C_PATH))
        self.world.arm(*self._b2c_scenario(answer))
        decided = self._decide(reference, "approve", secret)
        self.world.sim.clear_scenarios()
        sent = len(self.world.sim.requests(B2C_PATH)) - before
        self.world.figures[f"approval by {'maker' if by_maker else 'checker'}: {decided}"] += 1
        if secret == "test-key":  # a bare key has no operator role
            assert decided == 403
        elif was != "awaiting_approval":
            assert decided == 409
        elif by_maker:
            assert decided == 403
        else:
            assert decided in (200, 422)
        assert sent == (1 if decided == 200 else 0), f"approval answered {decided}, sent {sent}"
        if decided == 200:
            self.truth.approvals[reference] += 1

    @rule(pick=PICK, by_maker=st.booleans())
    def operator_rejects(self, pick, by_maker):
        reference = self._asked(pick)
        if reference is None:
            return
        secret = self.truth.asked_by[reference] if by_maker else OPERATOR
        was = self._status_of(reference)
        decided = self._decide(reference, "reject", secret)
        if secret == "test-key":  # a bare key has no operator role
            assert decided == 403
        elif was != "awaiting_approval":
            assert decided == 409
        else:
            assert decided == (403 if by_maker else 200)
        self.world.figures[f"rejection by {'maker' if by_maker else 'checker'}: {decided}"] += 1

    @rule()
    def approvals_expire(self):
        """APPROVAL_EXPIRES_HOURS pass: the expiry job ends every payout still waiting."""
        waiting = self._awaiting_approval()
        ended = expire_approvals(self.svc, now=utcnow() + timedelta(hours=25))
        assert ended == len(waiting)
        self.world.figures["expired unapproved"] += ended

    @rule(answer=st.sampled_from(sorted(B2C_ANSWERS)))
    def bulk_batch_approved_twice_and_sent_twice(self, answer):
        """A batch: payouts made by one upload and approved once (a second approval is
        refused); sending it twice sends each row at most once, never waiting again."""
        tag, base = uuid.uuid4().hex[:8], f"{self.world.base_url}/payouts/batches"
        rows = [
            f"bulk-{tag}-{user},{user},0712345678,{APPROVAL_AMOUNT},w," for user in APPROVAL_USERS
        ]
        content = "\n".join(["reference,user_id,phone,amount,reason,description", *rows])
        headers = {**as_key(MAKER), "Content-Type": "text/csv"}
        created = self.world.http.post(base, data=content, headers=headers, timeout=30)
        assert created.status_code == 201, created.text
        approve = f"{base}/{created.json()['batch_id']}/approve"
        decided = [
            self.world.http.post(approve, json={}, headers=as_key(OPERATOR), timeout=30)
            for _ in "12"
        ]
        assert [answer.status_code for answer in decided] == [200, 409]
        before = len(self.world.sim.requests(B2C_PATH))
        self.world.arm(*self._b2c_scenario(answer))
        send_batches(self.svc)
        send_batches(self.svc)  # again: each row replays its payout
        self.world.sim.clear_scenarios()
        assert len(self.world.sim.requests(B2C_PATH)) - before <= len(rows)
        for row in self.world.http.get(
            approve.removesuffix("/approve"), headers=as_key(OPERATOR), timeout=30
        ).json()["rows"]:
            assert row["status"] not in ("awaiting_approval", "queued"), row
            if row["sent"]:
                self.truth.references.append(row["reference_id"])
        self.world.figures["bulk batch sent"] += 1

    # --- collections --------------------------------------------------------------------------

    @rule(
        key=st.one_of(st.none(), st.sampled_from(KEYS_USED)),
        variant=st.integers(0, 1),
        answer=st.sampled_from(sorted(STK_ANSWERS)),
    )
    def initiate_stk_push(self, key, variant, answer):
        scenario, hang = STK_ANSWERS[answer]
        self.world.arm(scenario, STK_PATH, hang)
        response = self.world.post("/payments/mpesa/stk-initiate", stk_body(variant), key)
        self.world.sim.clear_scenarios()
        assert response.status_code in (200, 409, 502, 504), response.text
        if key:
            self._check_stk_answer(key, variant, response)

    @rule(variant=st.integers(0, 1))
    def stk_push_whose_callback_beats_its_timeout(self, variant):
        """The push's answer never comes; its callback (naming the payment) is applied before
        the service gives up waiting."""
        self.world.arm("accepted_no_response", STK_PATH, hang=TIMEOUT + 0.2)
        answer = self._delivering_while(
            lambda: self.world.post("/payments/mpesa/stk-initiate", stk_body(variant)),
            "stk_callback",
        )
        assert answer.status_code == 504, answer.text

    @rule(processed=st.booleans())
    def crash_while_pushing(self, processed):
        """The process dies after writing the payment ahead and sending the push."""
        request = StkRequest.from_body(stk_body(0))
        payment_id = write_payment_ahead(self.svc, request)
        self.world.arm(None if processed else "server_error_before_accept", STK_PATH)
        with contextlib.suppress(Exception):  # whatever Daraja said, nobody recorded it
            self.svc.client.stk_push(
                phone=request.phone,
                amount=request.amount,
                callback_url=f"{self.svc.hook_url('stk')}/{payment_id}",
                account_reference=request.account_reference,
                description=request.description,
            )
        self.world.sim.clear_scenarios()
        self.world.restart()

    # --- reversals of collections ------------------------------------------------------------

    @rule(
        pick=PICK,
        answer=st.sampled_from(sorted(REVERSAL_ANSWERS)),
        how=st.sampled_from(["once", "twice", "at once", "retry", "crash"]),
    )
    def operator_reverses(self, pick, answer, how):
        """An operator refunds a paid collection (one is paid first if there is none): once,
        twice, three times at once, as an explicit retry, or the process dies once Daraja has
        the request. At most one request goes out, and only when a reversal was written."""
        payment = self._collection_to_reverse(pick)
        if payment is None:
            return
        world, before = self.world, len(self.world.sim.requests(REVERSAL_PATH))
        scenario, hang = REVERSAL_ANSWERS[answer]
        world.arm(scenario, REVERSAL_PATH, hang)
        url = f"{world.base_url}/payments/{payment.id}/reverse"
        body = {"reason": "booking cancelled", "retry": how == "retry"}

        def ask():
            return world.http.post(url, json=body, headers=as_key(OPERATOR), timeout=30)

        if how == "crash":
            self._crash_while_reversing(payment)
            codes = []
        else:
            answers = self._at_once(3, ask) if how == "at once" else [ask()]
            answers += [ask()] if how == "twice" else []
            codes = [a.status_code for a in answers]
            assert set(codes) <= {200, 201, 409}, [a.text for a in answers]
            assert codes.count(201) <= 1, codes
        world.sim.clear_scenarios()
        sent = len(world.sim.requests(REVERSAL_PATH)) - before
        assert sent <= 1 and (how == "crash" or sent == codes.count(201)), (codes, sent)
        self.world.figures[f"reversal {how}: {sorted(codes) or 'crashed'}"] += 1

    @rule(pick=PICK)
    def someone_reverses_in_the_portal(self, pick):
        """An operator reverses a collection in the M-Pesa org portal, not through the service
        (its result goes elsewhere): the service's own reversal then meets R000001."""
        payment = self._collection_to_reverse(pick, pay_one=False)
        if payment is None or payment.status == "reversed":
            return
        self.world.arm("callback_dropped", REVERSAL_PATH)
        self.svc.client.reversal(
            transaction_id=payment.mpesa_receipt,
            amount=int(payment.paid_amount or payment.amount),
            remarks="portal",
            result_url="https://portal.invalid/result",
            queue_timeout_url="https://portal.invalid/timeout",
        )
        self.world.sim.clear_scenarios()
        self.world.figures["reversed in the portal"] += 1

    @rule(pick=PICK)
    def deliver_a_held_reversal_callback(self, pick):
        """As deliver_a_held_callback, among the reversals' only (they are few among many)."""
        held = [h["index"] for h in self.world.sim.held() if "/hooks/reversal/" in h["url"]]
        if held:
            self._deliver(held[pick % len(held)])

    @rule(answer=st.sampled_from(sorted(STATUS_ANSWERS)))
    def reversal_resolve_job(self, answer):
        self.world.arm(STATUS_ANSWERS[answer], STATUS_PATH, times=1000)
        before = len(self.world.sim.requests(REVERSAL_PATH))
        reversing.resolve_reversals(self.svc)
        self.world.sim.clear_scenarios()
        assert len(self.world.sim.requests(REVERSAL_PATH)) == before, "the job sent a reversal"

    # --- Daraja's callbacks ---------------------------------------------------------------------

    @rule(pick=PICK)
    def deliver_a_held_callback(self, pick):
        held = self.world.sim.held()
        if held:
            self._deliver(pick % len(held))

    @rule(pick=PICK)
    def daraja_says_a_paid_payout_failed(self, pick):
        """Daraja contradicts itself: a retryable failure for a transaction that paid."""
        paid = [e for e in self.world.sim.ledger() if e["kind"] == "b2c"]
        if not paid:
            return
        entry = paid[pick % len(paid)]
        payout_id = self._payout_of_ocid(entry["originator_conversation_id"])
        self.truth.excused.add(payout_id)
        body = result_body(entry["originator_conversation_id"], code=26)
        answer = self.world.http.post(
            f"{self.world.base_url}/hooks/b2c/result/{TOKEN}", json=body, timeout=30
        )
        assert answer.status_code == 200
        assert wait_applied(self.svc)

    @rule(pick=PICK)
    def crash_after_journaling_a_callback(self, pick):
        """A callback is journaled and acknowledged; the process dies before applying it."""
        held = self.world.sim.held()
        if not held:
            return
        chosen = held[pick % len(held)]
        body = self.world.sim.held_body(chosen["index"])
        path = urlsplit(chosen["url"]).path
        kind, payment_id = self._kind_of(path)
        self.svc.journal.append_many(
            [(kind, requests.compat.json.dumps(body).encode(), "127.0.0.1", payment_id)]
        )
        self._note_evidence(chosen, body)
        self.world.figures["crashed after journaling"] += 1
        self.world.restart()

    # --- operators and jobs ----------------------------------------------------------------------

    @rule(pick=PICK, outcome=st.sampled_from(["paid", "not_paid", "acknowledge"]))
    def operator_resolves(self, pick, outcome):
        if not self.truth.references:
            return
        reference = self.truth.references[pick % len(self.truth.references)]
        payouts = service.b2c_payments
        (payout,) = self.world.rows(payouts, payouts.c.reference_id == reference)
        receipt = self._receipt_an_operator_would_type(payout)
        answer = self.world.http.post(
            f"{self.world.base_url}/payouts/{payout.reference_id}/resolve",
            json={"outcome": outcome, "receipt": receipt, "note": "model"},
            headers=as_key(OPERATOR),
            timeout=30,
        )
        assert answer.status_code in (200, 400, 409), answer.text
        self.world.figures[f"operator {outcome} answered {answer.status_code}"] += 1
        if answer.status_code != 200:
            return
        if outcome == "not_paid" and self._money_moved_for(payout.id):
            self.truth.excused.add(payout.id)
        if outcome == "paid":
            self.truth.operator_paid.add(payout.id)
            if len(self.truth.evidence.get(payout.id, ())) > 1:
                self.truth.double_resolved.add(payout.id)

    @rule(answer=st.sampled_from(sorted(STATUS_ANSWERS)))
    def resolve_job(self, answer):
        self.world.arm(STATUS_ANSWERS[answer], STATUS_PATH, times=1000)
        resolve_payouts(self.svc)
        self.world.sim.clear_scenarios()

    @rule(answer=st.sampled_from(sorted(B2C_ANSWERS)))
    def retry_job(self, answer):
        scenario, hang = B2C_ANSWERS[answer]
        self.world.arm(scenario, B2C_PATH, hang, times=1000)
        before = self._counted_today(BURST_USER)
        self.world.figures["new attempts"] += retry_failed_payouts(self.svc)
        self.world.sim.clear_scenarios()
        after = self._counted_today(BURST_USER)
        assert after == before or after <= LIMIT, "a retry passed the daily limit"

    @rule()
    def sweep_job(self):
        sweep_stk(self.svc)

    @rule()
    def journal_replay_job(self):
        replay_journal(self.svc)

    @rule()
    def crash_and_restart(self):
        self.world.restart()

    # --- what must hold after every step ---------------------------------------------------------

    def check_invariants(self, *args, **kwargs):
        with self.world.reading_once():
            super().check_invariants(*args, **kwargs)

    @invariant()
    def no_new_attempt_after_evidence(self):
        for payout_id, ocids in self.truth.attempts_at_evidence.items():
            now = {a.originator_conversation_id for a in self._attempts(payout_id)}
            assert now <= ocids, f"payout {payout_id}: a new attempt after evidence of payment"

    @invariant()
    def money_moved_at_most_once_per_payout(self):
        moved = [
            e["originator_conversation_id"] for e in self.world.sim.ledger() if e["kind"] == "b2c"
        ]
        paid = Counter(self._payout_of_ocid(ocid) for ocid in moved)
        assert None not in paid, self._explain_unknown_attempts(moved)
        for payout_id, times in paid.items():
            if times > 1:
                self.world.figures["paid twice, excused"] += 1
                assert payout_id in self.truth.excused, f"payout {payout_id} paid {times} times"

    @invariant()
    def completed_is_never_unpaid_again(self):
        for payout in self.world.rows(service.b2c_payments):
            if payout.status == "completed":
                self.truth.ever_completed.add(payout.id)
            elif payout.id in self.truth.ever_completed:
                assert payout.status == "review", (
                    f"payout {payout.id} completed, now {payout.status}"
                )
                assert len(self.truth.evidence.get(payout.id, ())) > 1

    @invariant()
    def a_paid_collection_stays_paid(self):
        for payment in self.world.rows(service.payments):
            known = self.truth.stk_paid.get(payment.id)
            if known is not None:  # or reversed: see the reversal invariants
                assert payment.status in REVERSED_SHOWN, payment.status
                receipt, amount = known
                assert receipt is None or payment.mpesa_receipt == receipt
                assert amount is None or payment.paid_amount == amount
            if payment.status in ("completed", "amount_mismatch"):
                self.truth.stk_paid[payment.id] = (payment.mpesa_receipt, payment.paid_amount)
            evidence = self.truth.stk_evidence.get(payment.id)
            if evidence is not None:
                assert payment.status in REVERSED_SHOWN, payment.status
                assert payment.mpesa_receipt == evidence

    @invariant()
    def every_acknowledged_callback_is_stored(self):
        received = {e["id"] for e in self.svc.journal.entries() if e["state"] == "received"}
        applied = {row.id for row in self.world.rows(service.callback_journal)}
        stored = {row.journal_id for row in self.world.rows(service.b2c_payment_callbacks)}
        stored |= {row.journal_id for row in self.world.rows(service.stk_callbacks)}
        stored |= {row.journal_id for row in self.world.rows(reversal_callbacks)}
        assert received <= applied, f"journaled, not applied: {received - applied}"
        assert received <= stored, f"journaled, not stored: {received - stored}"

    @invariant()
    def the_api_agrees_with_the_evidence(self):
        for payout in self.world.rows(service.b2c_payments):
            shown = self.world.payout(payout.reference_id)
            receipts = self.truth.evidence.get(payout.id, set())
            if len(receipts) > 1 and payout.id not in self.truth.double_resolved:
                assert shown["status"] == "review", shown
                assert "possible_double_payout" in shown["flags"]
            elif len(receipts) == 1:
                assert shown["status"] == "completed", self._explain_payout(payout.id, shown)
                assert shown["transaction_id"] in receipts
            elif payout.id not in self.truth.operator_paid:
                assert shown["status"] != "completed", shown

    @invariant()
    def a_payout_not_approved_is_never_sent(self):
        payouts = service.b2c_payments
        unsent = ("awaiting_approval", "rejected", "expired")
        ledger = self.world.sim.ledger()
        paid = {e["originator_conversation_id"] for e in ledger if e["kind"] == "b2c"}
        for payout in self.world.rows(payouts, payouts.c.status.in_(unsent)):
            attempts = self._attempts(payout.id)
            assert attempts == [] and payout.attempt_count == 0, f"{payout.status} was sent"
            assert payout.originator_conversation_id is None
            assert not any(self._payout_of_ocid(ocid) == payout.id for ocid in paid)
        for reference, approvals in self.truth.approvals.items():
            assert approvals <= 1, f"payout {reference} approved {approvals} times"
        approved = Counter(
            row.payout_id
            for row in self.world.rows(service.payout_audit)
            if row.action == "approved"
        )
        assert all(times == 1 for times in approved.values()), approved

    @invariant()
    def a_reversal_is_sent_once_and_only_after_a_failure(self):
        """Money went back at most once per collection; each attempt was sent at most once,
        and a next attempt exists only after the last one failed (none while one is open,
        none after one completed)."""
        back = Counter(entry["reverses"] for entry in self._reversals_moved())
        assert all(times == 1 for times in back.values()), f"reversed twice: {back}"
        sent = Counter(
            urlsplit(r["body"]["ResultURL"]).path.rsplit("/", 1)[-1]
            for r in self.world.sim.requests(REVERSAL_PATH)
            if "/hooks/reversal/result/" in r["body"].get("ResultURL", "")
        )
        assert all(times == 1 for times in sent.values()), f"a reversal sent twice: {sent}"
        by_collection: dict = {}
        for row in self.world.rows(reversal_rows):
            by_collection.setdefault(row.payment_id, []).append(row)
        for payment_id, rows in by_collection.items():
            rows.sort(key=lambda row: row.attempt_no)
            assert [row.attempt_no for row in rows] == list(range(1, len(rows) + 1))
            for earlier in rows[:-1]:
                assert earlier.status == "failed", (
                    f"collection {payment_id}: attempt {earlier.attempt_no + 1} written while "
                    f"attempt {earlier.attempt_no} was {earlier.status}"
                )

    @invariant()
    def a_reversed_collection_shows_its_one_reversal(self):
        """`reversed` means one completed reversal, its receipt shown, its money moved back; a
        reversal result or status answer delivered and applied leaves it shown that way."""
        moved = {(e["receipt"], e["reverses"]) for e in self._reversals_moved()}
        completed = {}
        for row in self.world.rows(reversal_rows, reversal_rows.c.status == "completed"):
            assert row.payment_id not in completed, f"two completed reversals of {row.payment_id}"
            completed[row.payment_id] = row
        with self.svc.engine.connect() as conn:
            for payment in self.world.rows(service.payments):
                done = completed.get(payment.id)
                evidence = self.truth.reversal_evidence.get(payment.id)
                if payment.status != "reversed" and done is None and evidence is None:
                    continue
                shown = payment_row_view(conn, payment)
                assert shown["status"] == "reversed", (shown, done, evidence)
                assert done is not None, f"{payment.id} reversed with no completed reversal"
                assert shown["reversal_receipt"] == done.receipt, (shown, done)
                assert shown["mpesa_receipt"] == done.original_receipt, (shown, done)
                assert (done.receipt, done.original_receipt) in moved, (done, moved)
                assert evidence is None or evidence == done.receipt, (evidence, done)

    # --- helpers ---------------------------------------------------------------------------------

    def teardown(self):
        wait_applied(self.svc)
        self.world.figures["reversals"] += len(self.world.rows(reversal_rows))
        self.world.figures["reversals sent"] += len(
            [
                r
                for r in self.world.sim.requests(REVERSAL_PATH)
                if "/hooks/" in r["body"]["ResultURL"]
            ]
        )
        self.world.figures["reversals moved money"] += len(self._reversals_moved())
        self.world.figures["reversal results applied"] += len(self.truth.reversal_evidence)
        self.world.figures["reversed collections"] += len(
            self.world.rows(service.payments, service.payments.c.status == "reversed")
        )
        self.world.figures["examples"] += 1
        self.world.figures["payouts"] += len(self.world.rows(service.b2c_payments))
        self.world.figures["collections"] += len(self.world.rows(service.payments))
        self.world.figures["paid payouts"] += len(self.truth.evidence)

    def _b2c_scenario(self, answer: str) -> tuple[str, str, float]:
        scenario, hang = B2C_ANSWERS[answer]
        return scenario, B2C_PATH, hang

    def _check_payout_answer(self, key, variant, response):
        """A new key makes one payout (201); the same key and body replay it (200); another
        body, a key an STK push used, or a reference another payout has, is a 409."""
        code, first = response.status_code, self.truth.payout_keys.get(key)
        taken = variant == 2 and any(v == 2 for v, _ in self.truth.payout_keys.values())
        if key in self.truth.stk_keys or (first is not None and first[0] != variant):
            assert code == 409, response.text
        elif first is None and taken:
            assert code == 409, response.text
            assert SHARED_REFERENCE in response.json()["error"]
        elif first is None:
            assert code == 201, response.text
            self.truth.payout_keys[key] = (variant, response.json())
            self.truth.references.append(response.json()["reference_id"])
        else:
            assert code == 200, response.text
            assert response.json()["reference_id"] == first[1]["reference_id"]

    def _check_stk_answer(self, key, variant, response):
        """The same for pushes: the first answer, whatever it was, again; one prompt."""
        code, first = response.status_code, self.truth.stk_keys.get(key)
        if key in self.truth.payout_keys or (first is not None and first[0] != variant):
            assert code == 409, response.text
        elif first is None:
            self.truth.stk_keys[key] = (variant, code, response.json())
        else:
            assert (code, response.json()) == first[1:], response.text

    def _asked(self, pick: int) -> str | None:
        """One of the payouts asked for above APPROVAL_ABOVE, whatever it is now."""
        asked = list(self.truth.asked_by)
        return asked[pick % len(asked)] if asked else None

    def _status_of(self, reference: str) -> str:
        payouts = service.b2c_payments
        (payout,) = self.world.rows(payouts, payouts.c.reference_id == reference)
        return payout.status

    def _awaiting_approval(self) -> list:
        payouts = service.b2c_payments
        return self.world.rows(payouts, payouts.c.status == "awaiting_approval")

    def _decide(self, reference: str, verb: str, secret: str) -> int:
        answer = self.world.http.post(
            f"{self.world.base_url}/payouts/{reference}/{verb}",
            json={"reason": "model"},
            headers=as_key(secret),
            timeout=30,
        )
        return answer.status_code

    def _counted_today(self, user: str) -> int:
        """What counts against the user's daily limit now: today's payouts not failed, not
        rejected, not expired (awaiting approval counts: it may yet be sent)."""
        payouts = service.b2c_payments
        rows = self.world.rows(
            payouts,
            payouts.c.user_id == user,
            payouts.c.status.notin_(["failed", "rejected", "expired"]),
            payouts.c.initiated_at >= nairobi_day_start_utc(),
        )
        return sum(int(row.amount) for row in rows)

    def _submitting_since(self):
        """When the newest payout or reversal still `submitting` was last touched; None if
        there is none."""
        rows = [
            *self.world.rows(service.b2c_payments, service.b2c_payments.c.status == "submitting"),
            *self.world.rows(reversal_rows, reversal_rows.c.status == "submitting"),
        ]
        return max((row.updated_at for row in rows), default=None)

    def _at_once(self, count: int, call) -> list:
        barrier, answers = threading.Barrier(count), []

        def one():
            barrier.wait()
            answers.append(call())

        threads = [threading.Thread(target=one) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return answers

    def _delivering_while(self, call, purpose: str) -> requests.Response:
        """Make `call` on a thread, and while its request waits for Daraja's (held back)
        answer, deliver the callback of that request; `call`'s answer."""
        answers = []
        calling = threading.Thread(target=lambda: answers.append(call()))
        calling.start()
        try:
            held = self._wait_for_held(purpose)
            if held is not None:
                self._deliver(held)
        finally:
            calling.join()
            self.world.sim.clear_scenarios()
        return answers[0]

    def _wait_for_held(self, purpose: str) -> int | None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = [c["index"] for c in self.world.sim.held() if c["purpose"] == purpose]
            if found:
                return found[-1]
            time.sleep(0.01)
        return None

    def _deliver(self, index: int) -> None:
        delivered = self.world.deliver(index)
        assert delivered["status"] in (200, 400), delivered
        self.world.figures[f"delivered {delivered['purpose']}"] += 1
        self._note_evidence(delivered, delivered["body"])

    def _note_evidence(self, held: dict, body: dict) -> None:
        """Record what a delivered callback told the service: evidence of payment or not."""
        kind, named = self._kind_of(urlsplit(held["url"]).path)
        if kind.startswith("reversal"):
            self._note_reversal_evidence(kind, named, body["Result"])
            return
        if held["purpose"] == "stk_callback":
            callback = body["Body"]["stkCallback"]
            if callback["ResultCode"] == 0:
                items = {i["Name"]: i.get("Value") for i in callback["CallbackMetadata"]["Item"]}
                payment_id = self._kind_of(urlsplit(held["url"]).path)[1]
                self.truth.stk_evidence[payment_id] = items["MpesaReceiptNumber"]
            return
        result = body["Result"]
        receipt = _receipt_stated(result)
        if held["purpose"] != "result" or receipt is None:
            return
        payout_id = self._payout_of_ocid(held["subject"])
        if payout_id is None:
            return
        self.truth.evidence.setdefault(payout_id, set()).add(receipt)
        ocids = {a.originator_conversation_id for a in self._attempts(payout_id)}
        self.truth.attempts_at_evidence.setdefault(payout_id, ocids)

    def _explain_payout(self, payout_id: str, shown: dict) -> str:
        """Everything the database holds about a payout, for a failure message."""
        callbacks = service.b2c_payment_callbacks.c
        held = [
            (row.kind, row.outcome, row.result_code_text, row.transaction_id, row.received_at)
            for row in self.world.rows(
                service.b2c_payment_callbacks, callbacks.payout_id == payout_id
            )
        ]
        attempts = [
            (row.attempt_no, row.originator_conversation_id, row.status, row.receipt)
            for row in self._attempts(payout_id)
        ]
        flags = [
            (row.flag, row.detail)
            for row in self.world.rows(
                service.payment_flags, service.payment_flags.c.subject_id == payout_id
            )
        ]
        audit = [
            (row.actor, row.action, row.status_before, row.status_after, row.note)
            for row in self.world.rows(
                service.payout_audit, service.payout_audit.c.payout_id == payout_id
            )
        ]
        return (
            f"{shown}; attempts {attempts}; callbacks {held}; flags {flags}; audit {audit}; "
            f"evidence {self.truth.evidence.get(payout_id)}; example started at "
            f"{self.world.started_at}"
        )

    def _explain_unknown_attempts(self, moved: list[str]) -> str:
        unknown = [ocid for ocid in moved if self._payout_of_ocid(ocid) is None]
        sent = [
            (r["time"], r["scenario"], r["status"], r["body"].get("OriginatorConversationID"))
            for r in self.world.sim.requests(B2C_PATH)
        ]
        attempts = [
            a.originator_conversation_id for a in self.world.rows(service.b2c_payout_attempts)
        ]
        return (
            f"money moved for attempts no payout has: {unknown}; example started at "
            f"{self.world.started_at}; B2C requests: {sent}; attempts: {attempts}"
        )

    def _kind_of(self, path: str) -> tuple[str, str]:
        """The callback kind a hook path names, and the id an STK or reversal URL carries
        (the payment's, the reversal's)."""
        for prefix, kind in KINDS_BY_PATH.items():
            if path.startswith(prefix + "/"):
                rest = path[len(prefix) + 1 :].split("/")
                return kind, rest[1] if kind in NAMING_KINDS and len(rest) > 1 else ""
        raise AssertionError(f"no callback kind for {path}")

    def _note_reversal_evidence(self, kind: str, reversal_id: str, result: dict) -> None:
        """A reversal's result, or a status answer, stating a receipt whose money the simulator
        moved back for that collection: the collection must now show it reversed by it."""
        if kind == "reversal_result" and str(result.get("ResultCode")) == "0":
            receipt = result.get("TransactionID")
        elif kind == "reversal_status_result":
            receipt = _receipt_stated(result)
        else:
            return
        rows = self.world.rows(reversal_rows, reversal_rows.c.id == reversal_id)
        moved = {(e["receipt"], e["reverses"]) for e in self._reversals_moved()}
        if rows and (receipt, rows[0].original_receipt) in moved:
            self.truth.reversal_evidence[rows[0].payment_id] = receipt

    def _reversals_moved(self) -> list[dict]:
        return [e for e in self.world.sim.ledger() if e["kind"] == "reversal"]

    def _collection_to_reverse(self, pick: int, pay_one: bool = True):
        """One of the collections paid (or reversed) with a receipt; one paid now if there is
        none and `pay_one`."""
        payments = service.payments
        shown = self.world.rows(
            payments, payments.c.status.in_(REVERSED_SHOWN), payments.c.mpesa_receipt.isnot(None)
        )
        if shown:
            return sorted(shown, key=lambda row: row.id)[pick % len(shown)]
        if not pay_one:
            return None
        self.world.arm("success", STK_PATH)
        answer = self.world.post("/payments/mpesa/stk-initiate", stk_body(1))
        self.world.sim.clear_scenarios()
        if answer.status_code != 200:
            return None
        payment_id = answer.json()["payment_id"]
        held = [h["index"] for h in self.world.sim.held() if h["url"].endswith("/" + payment_id)]
        if not held:
            return None
        self._deliver(held[-1])
        (row,) = self.world.rows(payments, payments.c.id == payment_id)
        return row if row.status in STK_PAID_STATES else None

    def _crash_while_reversing(self, payment) -> None:
        """What POST /payments/<id>/reverse does, up to Daraja getting the Reversal request;
        then the process dies before its answer is stored."""
        svc = self.svc
        with svc.engine.connect() as conn:
            collection = reversing.find_collection(conn, "stk", payment.id)
            latest = reversing.latest_reversal(conn, payment.id)
        if collection.paid and (latest is None or latest.status == "failed"):
            number = 1 if latest is None else latest.attempt_no + 1
            request = reversing.ReversalRequest(payment.id, "booking cancelled", "ops", True)
            with contextlib.suppress(ApiError, sa.exc.IntegrityError):
                amount = int(collection.amount)
                reversal_id = reversing.write_ahead(svc, collection, request, amount, number)
                with contextlib.suppress(Exception):  # whatever Daraja said, nobody recorded it
                    svc.client.reversal(
                        transaction_id=collection.receipt,
                        amount=amount,
                        remarks="booking cancelled",
                        result_url=reversing.reversal_hook(svc, "result", reversal_id),
                        queue_timeout_url=reversing.reversal_hook(svc, "timeout", reversal_id),
                    )
        self.world.sim.clear_scenarios()
        self.world.restart()

    # Both read every attempt, so that the checks after a step read them once, not per payout.
    def _attempts(self, payout_id: str) -> list:
        return [a for a in self.world.rows(service.b2c_payout_attempts) if a.payout_id == payout_id]

    def _payout_of_ocid(self, ocid: str) -> str | None:
        attempts = self.world.rows(service.b2c_payout_attempts)
        rows = [a for a in attempts if a.originator_conversation_id == ocid]
        return rows[0].payout_id if rows else None

    def _money_moved_for(self, payout_id: str) -> bool:
        ocids = {a.originator_conversation_id for a in self._attempts(payout_id)}
        return any(e["originator_conversation_id"] in ocids for e in self.world.sim.ledger())

    def _receipt_an_operator_would_type(self, payout) -> str:
        """The receipt the statement shows when the payout was paid, else a made-up one."""
        ocids = {a.originator_conversation_id for a in self._attempts(payout.id)}
        for entry in self.world.sim.ledger():
            if entry["originator_conversation_id"] in ocids:
                return entry["receipt"]
        return "OP" + uuid.uuid4().hex[:8].upper()


def keep_alive_session() -> requests.Session:
    """One connection reused for the model's requests (concurrent ones open more), with no
    cookies kept: each request is sent as a lone requests.post would send it."""
    session = requests.Session()
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def _receipt_stated(result: dict) -> str | None:
    """The receipt a B2C result or a status answer states as paid; None when it states none."""
    items = result.get("ResultParameters", {}).get("ResultParameter", [])
    items = [items] if isinstance(items, dict) else items
    values = {item["Key"]: item.get("Value") for item in items}
    if str(result.get("ResultCode")) != "0":
        return None
    if "TransactionReceipt" in values:
        return values["TransactionReceipt"]
    if values.get("TransactionStatus") == "Completed":
        return values.get("ReceiptNo")
    return None


@pytest.fixture
def world(database_url, tmp_path):
    made = World(database_url, tmp_path)
    yield made
    made.close()


def test_the_money_model_holds(world, request):
    MoneyModel.world = world
    started = time.monotonic()
    run_state_machine_as_test(
        MoneyModel,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    figures = dict(sorted(world.figures.items()))
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"\nmoney model on {request.node.callspec.id}: {figures}")
