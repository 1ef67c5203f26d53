"""The named SQL of sql/queries and loading a period of a real database into Frames."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa

from recon.load import load_frames
from recon.queries import load_queries, parse_queries
from tests.recon_support import (
    at,
    attempt,
    legacy_payout,
    legacy_result,
    new_payout,
    new_result,
    seed,
)


def test_parse_queries_reads_name_doc_and_sql():
    queries = parse_queries(
        "-- file preamble\n\n"
        "-- name: two\n-- The number two.\n-- One row.\nSELECT 2;\n\n"
        "-- name: three\nSELECT 3\n"
    )

    assert list(queries) == ["two", "three"]
    assert queries["two"].doc == "The number two. One row."
    assert queries["two"].sql == "SELECT 2"
    assert queries["three"].doc == ""


def test_a_name_defined_twice_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")


def test_every_named_query_says_what_it_returns_and_binds_only_the_period():
    queries = load_queries()

    assert set(queries) >= {"payouts", "payout_attempts", "b2c_results", "stk_payments"}
    for query in queries.values():
        assert query.doc, query.name
        assert set(sa.text(query.sql).compile().params) == {"since", "until"}


def test_every_named_query_runs_on_the_database(engine):
    with engine.connect() as connection:
        for query in load_queries().values():
            connection.execute(sa.text(query.sql), {"since": None, "until": None}).fetchall()


def test_legacy_rows_load_with_old_columns_only(engine, database_url):
    seed(
        engine,
        payouts=[legacy_payout("p02", "500.10", "completed", reference="REF2", txn="TK2")],
        results=[legacy_result("r2", reference="REF2", code=2001, amount="500.10")],
        payments=[
            {
                "id": "s2",
                "amount": "100.00",
                "method": "mpesa",
                "status": "completed",
                "transaction_reference": "TKS2",
                "created_at": at(9),
            }
        ],
    )

    frames = load_frames(database_url)

    payout = frames.payouts.iloc[0]
    assert (payout["id"], payout["amount_cents"], payout["reference_id"]) == ("p02", 50010, "REF2")
    assert payout["initiated_at"] == datetime(2025, 11, 5, 8, 0)
    result = frames.results.iloc[0]
    assert (result["result_code"], result["kind"], result["amount_cents"]) == (
        "2001",
        "result",
        50010,
    )
    assert frames.stk.iloc[0]["receipt"] == "TKS2"


def test_new_rows_load_with_text_codes_and_stk_callback_amounts(engine, database_url):
    seed(
        engine,
        payouts=[new_payout("p01", "100.00", "failed", ocid="OC1")],
        attempts=[attempt("p01", "OC1")],
        results=[new_result("r1", ocid="OC1", code="SFC_IC0003")],
        payments=[
            {
                "id": "s1",
                "amount": "50.00",
                "method": "mpesa",
                "status": "completed",
                "created_at": at(9),
            }
        ],
        stk_callbacks=[
            {
                "id": "c1",
                "payment_id": "s1",
                "result_code": "0",
                "amount": "45.00",
                "mpesa_receipt": "TKS1",
                "received_at": at(9, 1),
            }
        ],
    )

    frames = load_frames(database_url)

    assert frames.results.iloc[0]["result_code"] == "SFC_IC0003"
    assert list(frames.attempts["ocid"]) == ["OC1"]
    assert (frames.stk.iloc[0]["paid_amount_cents"], frames.stk.iloc[0]["receipt"]) == (
        4500,
        "TKS1",
    )


def test_the_period_keeps_older_payouts_that_results_in_it_point_at(engine, database_url):
    seed(
        engine,
        payouts=[
            legacy_payout("p-old", "10.00", "completed", reference="OLD", hour=1),
            legacy_payout("p-in", "20.00", "completed", reference="IN", hour=12),
            legacy_payout("p-out", "30.00", "completed", reference="OUT", hour=2),
        ],
        results=[legacy_result("r-old", reference="OLD", code=0, amount="10.00", hour=12)],
    )

    frames = load_frames(database_url, since=at(10), until=at(20))

    assert sorted(frames.payouts["id"]) == ["p-in", "p-old"]
    assert list(frames.results["id"]) == ["r-old"]
