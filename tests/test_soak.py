"""The soak at CI size (bench/soak.py: 300 payouts, 30 STK payments, a third of the keys re-sent,
faults by magic phone and armed token expiry, the service SIGKILLed twice), on SQLite and on
MariaDB at once, and its four claims: nothing paid twice, no answered callback missing from the
database, every payout settled or in review, every completed payout agreeing with the money
the simulator moved.

Both soaks run concurrently in the background, started as the run begins
(tests/background_soaks.py); each waits SUBMITTING_STUCK_AFTER_SECONDS, 5 s here, before
payouts left `submitting` by a kill are resolved, and STK_EXPIRY_SECONDS, 10 s, for pushes a
kill left open. Each test reads the figures of its database."""

from __future__ import annotations

import pytest

from tests.background_soaks import DATABASES, figures


@pytest.mark.parametrize("database", DATABASES)
def test_soak_pays_no_payout_twice(database):
    result = figures(database)
    assert (result["paid_twice"], result["ledger_without_payout"]) == (0, 0)


@pytest.mark.parametrize("database", DATABASES)
def test_soak_loses_no_answered_callback(database):
    assert figures(database)["callbacks_lost"] == 0


@pytest.mark.parametrize("database", DATABASES)
def test_soak_leaves_every_payout_settled_or_in_review(database):
    result = figures(database)
    assert result["payouts_open"] == 0, result["statuses"]


@pytest.mark.parametrize("database", DATABASES)
def test_soak_completed_payouts_agree_with_the_money_moved(database):
    result = figures(database)
    assert (result["completed_disagree"], result["failed_but_paid"]) == (0, 0)


@pytest.mark.parametrize("database", DATABASES)
def test_soak_reused_keys_replay_one_payout(database):
    result = figures(database)
    assert result["replays_answered_with_another_payout"] == 0
    assert result["conflicting_bodies_not_refused"] == 0
    assert result["gave_up"] == 0


# --- what the soak found ----------------------------------------------------------------------


def test_stk_payment_written_ahead_by_a_killed_process_is_expired_by_the_sweep(make_stack):
    """The row initiate_stk commits before calling Daraja, with nothing after it (the process
    died): the sweep must still find it and expire it."""
    import sqlalchemy as sa

    import service
    from mpesa_service.stk import StkRequest, sweep_stk, write_payment_ahead

    stack = make_stack({"STK_QUERY_AFTER_SECONDS": "0", "STK_EXPIRY_SECONDS": "60"})
    request = StkRequest.from_body(
        {"phone": "0708374149", "amount": 150, "account_reference": "INV1"}
    )
    payment_id = write_payment_ahead(stack.svc, request)
    with stack.svc.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE payments SET id = 'killed-mid-push', created_at = :old WHERE id = :id"),
            {"old": "2020-01-01 00:00:00", "id": payment_id},
        )
    sweep_stk(stack.svc)
    (payment,) = stack.rows(service.payments, service.payments.c.id == "killed-mid-push")
    assert payment.status == "failed"
