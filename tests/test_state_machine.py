"""The payout state machine: from each state, exactly the transitions in PAYOUT_STATES happen,
and every other one is refused by the compare-and-set (on SQLite and MariaDB)."""

import pytest

import service
from mpesa_service.payouts import PAYOUT_STATES, transition

STATES = list(PAYOUT_STATES)

# Evidence of payment completes a payout from any state, or sends it to review when a second
# attempt was paid too; `completed` is never unpaid again.
EXPECTED = {
    "awaiting_approval": {"submitting", "rejected", "expired"},
    "submitting": {"pending", "unknown", "failed", "completed", "review"},
    "pending": {"completed", "failed", "unknown", "review"},
    "unknown": {"completed", "failed", "review"},
    "failed": {"submitting", "completed", "review"},
    "review": {"completed", "failed"},
    "completed": {"review"},
    "rejected": set(),
    "expired": set(),
}


def payout_in(engine, status: str) -> str:
    with engine.begin() as conn:
        conn.execute(
            service.b2c_payments.insert().values(
                id=f"p-{status}", amount=100, phone_number="254712345678", status=status
            )
        )
    return f"p-{status}"


def test_the_table_in_the_code_is_the_documented_one():
    assert {state: set(targets) for state, (_, targets) in PAYOUT_STATES.items()} == EXPECTED


@pytest.mark.parametrize("state", STATES)
def test_allowed_and_forbidden_transitions_from(engine, state):
    for target in STATES:
        payout_id = payout_in(engine, state)
        with engine.begin() as conn:
            moved = transition(conn, payout_id, target)
        with engine.connect() as conn:
            now = (
                conn.execute(
                    service.b2c_payments.select().where(service.b2c_payments.c.id == payout_id)
                )
                .one()
                .status
            )
        assert moved == (target in EXPECTED[state]), f"{state} -> {target}"
        assert now == (target if moved else state)
        with engine.begin() as conn:
            conn.execute(
                service.b2c_payments.delete().where(service.b2c_payments.c.id == payout_id)
            )


def test_a_transition_applies_once_when_asked_twice(engine):
    payout_id = payout_in(engine, "pending")
    with engine.begin() as conn:
        first = transition(conn, payout_id, "completed")
    with engine.begin() as conn:
        second = transition(conn, payout_id, "completed")
    assert (first, second) == (True, False)
