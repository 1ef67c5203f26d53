"""The analyst notebooks, end to end: a demo database and statement from the generator, every
notebook executed with nbclient against them, and assertions on the values each records (counts
per check equal the CLI's on the same data; health figures equal what small SQL says). Also the
generator's guarantees (on SQLite and MariaDB) and the health functions on small frames."""

from __future__ import annotations

import ast
import csv
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from matplotlib.image import imread
from nbclient import NotebookClient

import service
from mpesa_service import storage
from recon import health
from recon.api import build_report
from recon.checks import CHECK_NAMES
from recon.cli import main as recon_main
from recon.codes import meaning
from recon.demo import (
    BILL_REF_QUERY,
    NOT_PLANTED,
    OVERCHARGE,
    STK_REVERSED,
    generate,
    statement_rows,
    window,
    write_demo,
)
from recon.frames import Frames
from recon.plots import CHECK_COLOURS, stacked_bars
from recon.report import CHECK_MEANINGS

PROJECT = Path(__file__).resolve().parent.parent
NOTEBOOKS = PROJECT / "notebooks"
NOTEBOOK_NAMES = ["01-reconciliation", "02-payouts-health", "03-collections"]
SEED, END = 11, date(2025, 11, 8)
START, AS_OF = window(7, END)  # Nairobi days 1-7 November 2025: 2025-10-31 21:00 UTC on
STALE_AFTER = 30


# -- fixtures -------------------------------------------------------------------------------------


@dataclass
class Demo:
    url: str
    statement: Path
    folder: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Demo:
    folder = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{folder / 'demo.db'}"
    engine = service.make_engine(url)
    service.migrate(engine)
    engine.dispose()
    write_demo(url, folder / "statement.csv", seed=SEED, end=END)
    return Demo(url, folder / "statement.csv", folder)


@pytest.fixture(scope="module")
def demo_engine(demo):
    engine = service.make_engine(demo.url)
    yield engine
    engine.dispose()


def kernel_name() -> str:
    """`python3`, after making sure it starts this interpreter (a kernelspec whose argv is
    plain `python` is started with sys.executable by jupyter_client)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv = KernelSpecManager().get_kernel_spec("python3").argv
    except NoSuchKernel:
        argv = []
    if not argv or argv[0] not in ("python", "python3", sys.executable):
        from ipykernel.kernelspec import install

        install(prefix=sys.prefix, user=False)
    return "python3"


def parameters_cell(notebook):
    cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(cells) == 1
    return cells[0]


def execute(name: str, params: dict):
    """Run notebooks/<name>.ipynb with `params` replacing its parameters cell; the executed
    notebook."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    parameters_cell(notebook).source = "\n".join(
        f"{key} = {value!r}" for key, value in params.items()
    )
    client = NotebookClient(
        notebook,
        kernel_name=kernel_name(),
        timeout=120,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return notebook


def recorded_values(notebook) -> dict:
    """The JSON the notebook's last cell (tagged `recorded`) displays."""
    last = notebook.cells[-1]
    assert "recorded" in last.metadata.get("tags", [])
    return next(out["data"]["application/json"] for out in last.outputs if "data" in out)


def notebook_params(name: str, demo: Demo) -> dict:
    common = {"database_url": demo.url, "out_dir": str(demo.folder / f"out-{name}")}
    if name == "01-reconciliation":
        return {
            **common,
            "statement_path": str(demo.statement),
            "since": None,
            "until": None,
            "as_of": None,  # the default, as the CLI's (the statement's end: AS_OF)
            "stale_after_minutes": STALE_AFTER,
            "double_payout_window_hours": 24,
            "tariff_path": None,
            "bill_ref_query": BILL_REF_QUERY,
        }
    period = {"since": f"{START:%Y-%m-%dT%H:%M}Z", "until": f"{AS_OF:%Y-%m-%dT%H:%M}Z"}
    if name == "02-payouts-health":
        return {**common, **period, "as_of": period["until"], "stale_after_minutes": STALE_AFTER}
    return {**common, **period}


@pytest.fixture(scope="module")
def executed(demo) -> dict:
    return {name: execute(name, notebook_params(name, demo)) for name in NOTEBOOK_NAMES}


@pytest.fixture(scope="module")
def recorded(executed) -> dict[str, dict]:
    return {name: recorded_values(notebook) for name, notebook in executed.items()}


def rows(engine, query) -> pd.DataFrame:
    with engine.connect() as connection:
        result = connection.execute(query)
        return pd.DataFrame(result.all(), columns=list(result.keys()))


def quantiles(seconds) -> dict:
    values = pd.Series(list(seconds), dtype="float64")
    return {"count": len(values), "p50": values.quantile(0.5), "p95": values.quantile(0.95)}


# -- the committed notebooks ----------------------------------------------------------------------


@pytest.mark.parametrize("name", NOTEBOOK_NAMES)
def test_notebook_is_committed_stripped_with_one_parameters_cell(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assigned = {
        target.id
        for node in ast.parse(parameters_cell(notebook).source).body
        for target in node.targets
    }
    assert assigned == set(notebook_params(name, Demo("", Path(), Path())))
    assert notebook.metadata.kernelspec.name == "python3"


# -- the notebooks, executed ----------------------------------------------------------------------


def test_reconciliation_notebook_with_its_defaults_equals_the_cli_with_its_own(
    demo, recorded, tmp_path
):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "recon", "--database-url", demo.url]
    command += ["--statement", str(demo.statement), "--bill-ref-query", BILL_REF_QUERY]
    finished = subprocess.run(
        [*command, "--out", str(out)], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 1, finished.stderr
    with (out / "summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))

    notebook = recorded["01-reconciliation"]
    assert notebook["counts"] == {row["check"]: int(row["count"]) for row in summary}
    assert {row["check"]: row["kes_at_risk"] for row in notebook["summary"]} == {
        row["check"]: row["kes_at_risk"] or None
        for row in summary  # count only: no amount
    }
    assert notebook["findings"] == sum(int(row["count"]) for row in summary)
    assert notebook["period"] == {
        "since": f"{START:%Y-%m-%d %H:%M:%S}",
        "until": f"{AS_OF:%Y-%m-%d %H:%M:%S}",
        "as_of": f"{AS_OF:%Y-%m-%d %H:%M:%S}",
    }
    saved = demo.folder / "out-01-reconciliation"
    assert set(notebook["written"]) == {path.name for path in out.iterdir()}
    for name in ("summary.csv", "findings.csv", "report.txt"):
        assert (saved / name).read_bytes() == (out / name).read_bytes(), name
    assert notebook["charges"][-1]["difference"] == str(OVERCHARGE)  # the one planted
    assert len(notebook["charges"]) == 8  # the 7 Nairobi days and the total
    timed = sum(notebook["findings_per_day"].values())
    assert timed == notebook["findings"] - notebook["counts"]["statement_integrity"]


def test_payouts_health_notebook_records_what_the_database_says(recorded, demo_engine):
    notebook = recorded["02-payouts-health"]
    payouts = service.b2c_payments.c
    table = rows(
        demo_engine, sa.select(payouts.id, payouts.status, payouts.amount, payouts.initiated_at)
    )

    assert notebook["payouts"] == len(table)
    counts = table["status"].value_counts()
    assert {row["status"]: row["count"] for row in notebook["statuses"]} == {
        status: int(counts.get(status, 0)) for status in health.PAYOUT_STATUSES
    }
    completed, failed = int(counts["completed"]), int(counts["failed"])
    assert notebook["success_rate"] == pytest.approx(completed / (completed + failed))

    table["day"] = (table["initiated_at"] + timedelta(hours=3)).dt.strftime("%Y-%m-%d")
    expected_days = [
        {
            "day": day,
            "payouts": len(group),
            "kes_initiated": f"{sum(group['amount']):.2f}",
            "completed": int((group["status"] == "completed").sum()),
            "failed": int((group["status"] == "failed").sum()),
        }
        for day, group in table.groupby("day")
    ]
    assert [{key: row[key] for key in expected_days[0]} for row in notebook["per_day"]] == (
        expected_days
    )

    results = service.b2c_payment_callbacks.c
    failures = rows(
        demo_engine,
        sa.select(
            results.result_code_text,
            sa.func.count().label("results"),
            sa.func.count(sa.distinct(results.payout_id)).label("payouts"),
        )
        .where(results.kind != "timeout", results.result_code_text != "0")
        .group_by(results.result_code_text),
    )
    assert {
        row["result_code"]: (row["results"], row["payouts"], row["meaning"])
        for row in notebook["failures_by_code"]
    } == {
        row.result_code_text: (row.results, row.payouts, meaning(row.result_code_text, "b2c"))
        for row in failures.itertuples()
    }

    first = rows(
        demo_engine,
        sa.select(payouts.initiated_at, sa.func.min(results.received_at).label("first"))
        .join_from(
            service.b2c_payments, service.b2c_payment_callbacks, results.payout_id == payouts.id
        )
        .where(results.kind == "result")
        .group_by(payouts.id, payouts.initiated_at),
    )
    seconds = (
        pd.to_datetime(first["first"]) - pd.to_datetime(first["initiated_at"])
    ).dt.total_seconds()
    assert notebook["time_to_result"] == quantiles(seconds)

    stale_before = AS_OF - timedelta(minutes=STALE_AFTER)
    attention = {
        (row.id, row.status, "review" if row.status == "review" else "stale")
        for row in table.itertuples()
        if row.status == "review"
        or (row.status in ("submitting", "pending", "unknown") and row.initiated_at < stale_before)
    }
    assert {
        (r["payout_id"], r["status"], r["why"]) for r in notebook["stale_and_review"]
    } == attention

    attempts = service.b2c_payout_attempts.c
    retried = sa.select(attempts.payout_id).group_by(attempts.payout_id).having(sa.func.count() > 1)
    outcomes = rows(
        demo_engine,
        sa.select(payouts.status, sa.func.count().label("payouts"))
        .where(payouts.id.in_(retried))
        .group_by(payouts.status),
    )
    assert {row["status"]: row["payouts"] for row in notebook["retry_outcomes"]} == dict(
        zip(outcomes["status"], outcomes["payouts"], strict=True)
    )
    assert "payouts_per_day.png" in notebook["written"]


def stk_category(status: str, code: str | None) -> str:
    code = None if pd.isna(code) else code
    if code == "0":
        return "paid"
    if code == "1032":
        return "cancelled"
    if code in ("1037", "1019") or (code is None and status == "failed"):
        return "timeout"
    return "open" if code is None else "failed"


def test_collections_notebook_records_what_the_database_says(recorded, demo_engine):
    notebook = recorded["03-collections"]
    payments = service.payments.c
    table = rows(
        demo_engine,
        sa.select(
            payments.id,
            payments.status,
            payments.result_code,
            payments.amount,
            payments.paid_amount,
            payments.created_at,
        ),
    )

    assert notebook["requests"] == len(table)
    counts = table["status"].value_counts()
    assert {row["status"]: row["count"] for row in notebook["statuses"]} == {
        status: int(counts.get(status, 0)) for status in health.STK_STATUSES
    }
    category = [stk_category(r.status, r.result_code) for r in table.itertuples()]
    assert notebook["rates"] == {
        name: pytest.approx(category.count(name) / len(table)) for name in health.STK_OUTCOMES
    }
    by_code = table["result_code"].fillna("none").value_counts()
    assert {
        code: sum(row["requests"] for row in notebook["by_code"] if row["result_code"] == code)
        for code in by_code.index
    } == by_code.to_dict()

    short = table[table["paid_amount"].notna() & (table["paid_amount"] < table["amount"])]
    assert {row["payment_id"] for row in notebook["underpayments"]} == set(short["id"])
    assert notebook["kes_short"] == f"{sum(short['amount'] - short['paid_amount']):.2f}"
    assert len(short) >= 1

    callbacks = service.stk_callbacks.c
    first = rows(
        demo_engine,
        sa.select(payments.created_at, sa.func.min(callbacks.received_at).label("first"))
        .join_from(service.payments, service.stk_callbacks, callbacks.payment_id == payments.id)
        .group_by(payments.id, payments.created_at),
    )
    seconds = (
        pd.to_datetime(first["first"]) - pd.to_datetime(first["created_at"])
    ).dt.total_seconds()
    assert notebook["time_to_callback"] == quantiles(seconds)

    c2b = rows(demo_engine, sa.select(service.c2b_payments))
    assert notebook["c2b_payments"] == len(c2b) and len(c2b) >= 50
    assert sum(row["payments"] for row in notebook["c2b_per_day"]) == len(c2b)
    assert sum(row["pulled"] for row in notebook["c2b_per_day"]) == (c2b["source"] == "pull").sum()
    assert sum(Decimal(row["kes_received"]) for row in notebook["c2b_per_day"]) == sum(
        Decimal(str(amount)) for amount in c2b["amount"]
    )

    made = rows(demo_engine, sa.select(storage.reversals))
    assert {
        (row["kind"], row["payment_id"], row["receipt"], row["reversal_receipt"], row["kes"])
        for row in notebook["reversed"]
    } == {
        (r.payment_kind, r.payment_id, r.original_receipt, r.receipt, f"{r.amount:.2f}")
        for r in made.itertuples()
    }
    assert {row["kind"] for row in notebook["reversed"]} == {"stk", "c2b"}
    assert notebook["kes_reversed"] == f"{sum(made['amount']):.2f}"
    statuses = {row["status"]: row for row in notebook["statuses"]}
    assert statuses["reversed"]["count"] == (made["payment_kind"] == "stk").sum() == STK_REVERSED


# -- the generator --------------------------------------------------------------------------------


def test_generator_plants_every_check_and_every_status(database_url, tmp_path):
    statement = tmp_path / "statement.csv"
    write_demo(database_url, statement, seed=SEED, end=END)

    report = build_report(
        database_url,
        since=None,
        until=None,
        as_of=AS_OF,
        statement_path=str(statement),
        bill_ref_query=BILL_REF_QUERY,
    )

    counts = report.findings.counts()
    assert {check for check in CHECK_NAMES if counts[check] == 0} == set(NOT_PLANTED)
    charges = report.findings.of("charge_mismatch")
    assert list(charges["at_risk"]) == [OVERCHARGE]  # every other payout charged as the tariff
    assert report.charges.iloc[-1]["difference"] == OVERCHARGE
    engine = service.make_engine(database_url)
    try:
        with engine.connect() as connection:
            payout_statuses = set(connection.scalars(sa.select(service.b2c_payments.c.status)))
            stk_statuses = set(connection.scalars(sa.select(service.payments.c.status)))
            payouts = connection.scalar(
                sa.select(sa.func.count()).select_from(service.b2c_payments)
            )
    finally:
        engine.dispose()
    assert payout_statuses == set(health.PAYOUT_STATUSES)
    assert stk_statuses == set(health.STK_STATUSES)
    assert 200 <= payouts <= 500


def test_generator_payouts_above_approval_were_never_sent_and_are_audited(database_url, tmp_path):
    write_demo(database_url, tmp_path / "statement.csv", seed=SEED, end=END)
    payouts, audit = service.b2c_payments, storage.payout_audit
    engine = service.make_engine(database_url)
    try:
        with engine.connect() as connection:
            unsent = connection.execute(
                sa.select(payouts).where(
                    payouts.c.status.in_(("awaiting_approval", "rejected", "expired"))
                )
            ).all()
            attempts = connection.scalar(
                sa.select(sa.func.count())
                .select_from(service.b2c_payout_attempts)
                .where(service.b2c_payout_attempts.c.payout_id.in_([p.id for p in unsent]))
            )
            trail = connection.execute(sa.select(audit).order_by(audit.c.created_at)).all()
    finally:
        engine.dispose()

    assert sorted(p.status for p in unsent) == ["awaiting_approval", "expired", "rejected"]
    assert attempts == 0
    assert all(p.attempt_count == 0 and p.originator_conversation_id is None for p in unsent)
    actions = {
        p.id: [(a.action, a.status_before, a.status_after) for a in trail if a.payout_id == p.id]
        for p in unsent
    }
    created = ("created", None, "awaiting_approval")
    assert sorted(actions.values()) == sorted(
        [
            [created],
            [created, ("rejected", "awaiting_approval", "rejected")],
            [created, ("expired", "awaiting_approval", "expired")],
        ]
    )


def test_generator_reversals_made_by_the_service_reconcile_clean(database_url, tmp_path):
    statement = tmp_path / "statement.csv"
    write_demo(database_url, statement, seed=SEED, end=END)
    report = build_report(
        database_url, since=None, until=None, as_of=AS_OF, statement_path=str(statement)
    )
    engine = service.make_engine(database_url)
    try:
        with engine.connect() as connection:
            made = connection.execute(sa.select(storage.reversals)).all()
            stk = connection.execute(
                sa.select(service.payments).where(service.payments.c.status == "reversed")
            ).all()
            c2b = connection.execute(
                sa.select(service.c2b_payments).where(
                    service.c2b_payments.c.reversal_receipt.is_not(None)
                )
            ).all()
            audit = connection.execute(sa.select(storage.collection_audit)).all()
    finally:
        engine.dispose()

    assert {(row.payment_kind, row.status) for row in made} == {
        ("stk", "completed"),
        ("c2b", "completed"),
    }
    assert len(made) == STK_REVERSED + 1 and len(stk) == STK_REVERSED and len(c2b) == 1
    by_collection = {row.payment_id: row for row in made}
    assert {row.id for row in stk} | {row.id for row in c2b} == set(by_collection)
    assert all(by_collection[row.id].original_receipt == row.mpesa_receipt for row in stk)
    assert by_collection[c2b[0].id].receipt == c2b[0].reversal_receipt
    assert sorted((row.payment_id, row.action) for row in audit) == sorted(
        (payment_id, action)
        for payment_id in by_collection
        for action in ("reversal_requested", "reversed")
    )
    # each has its statement row (Withdrawn, linked to the receipt undone) and is no finding
    with statement.open() as handle:
        text = handle.read()
    entries = csv.DictReader(io.StringIO(text[text.index("Receipt No.,") :]))
    linked = {
        entry["Receipt No."]: (entry["Linked Transaction ID"], entry["Withdrawn"])
        for entry in entries
        if entry["Reason Type"] == "Reversal"
    }
    for row in made:
        assert linked[row.receipt] == (row.original_receipt, f"{-row.amount:,.2f}")
    found = report.findings.of("reversal")
    assert len(found) == 1  # the payout reversed in the org portal, which the service never made
    assert not set(found["transaction_id"]) & {row.original_receipt for row in made}


def test_generator_is_deterministic_per_seed_and_end():
    first, again, other = generate(SEED, 7, END), generate(SEED, 7, END), generate(SEED + 1, 7, END)

    assert first.rows == again.rows
    assert statement_rows(first) == statement_rows(again)
    assert first.rows["b2c_payments"] != other.rows["b2c_payments"]
    assert (first.start, first.end) == (datetime(2025, 10, 31, 21), datetime(2025, 11, 7, 21))


def test_demo_data_names_the_migrate_command_for_a_new_sqlite_file(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'new.db'}"

    status = recon_main(
        ["demo-data", "--database-url", url, "--statement", str(tmp_path / "s.csv")]
    )

    assert status == 2
    assert f"DATABASE_URL='{url}' python service.py migrate" in capsys.readouterr().err
    assert not (tmp_path / "new.db").exists()


def test_demo_data_refuses_a_database_that_already_has_payments(demo, tmp_path, capsys):
    argv = ["demo-data", "--database-url", demo.url, "--statement", str(tmp_path / "s.csv")]

    assert recon_main(argv) == 2
    assert "demo data goes into an empty database" in capsys.readouterr().err


def test_reconciliation_notebook_shows_each_checks_meaning_whole_and_count_only_checks(executed):
    notebook = executed["01-reconciliation"]
    (summary,) = [cell for cell in notebook.cells if "CHECK_MEANINGS)" in cell.source]
    shown = "".join(out["data"]["text/plain"] for out in summary.outputs if "data" in out)

    longest = max(CHECK_MEANINGS.values(), key=len)
    assert len(longest) > 150
    assert " ".join(longest.split()) in " ".join(shown.split())
    assert "count only" in shown and "None" not in shown  # checks that move no money


def test_every_check_has_its_own_colour_in_the_stacked_chart():
    assert list(CHECK_COLOURS) == list(CHECK_NAMES)
    assert len(set(CHECK_COLOURS.values())) == len(CHECK_NAMES)
    one_each = pd.DataFrame(
        np.eye(len(CHECK_NAMES), dtype=int),
        index=[f"2025-11-{day:02d}" for day in range(1, len(CHECK_NAMES) + 1)],
        columns=list(CHECK_NAMES),
    )

    png = stacked_bars(one_each, "findings by check", "findings", colours=CHECK_COLOURS)

    pixels = imread(io.BytesIO(png))[:, :, :3].reshape(-1, 3)
    drawn = {
        tuple(round(channel * 255) for channel in pixel) for pixel in np.unique(pixels, axis=0)
    }
    assert all(_rgb(CHECK_COLOURS[name]) in drawn for name in CHECK_NAMES)


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[at : at + 2], 16) for at in (1, 3, 5))


# -- the health functions on small frames ---------------------------------------------------------


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 11, 5, hour, minute, second)


def payout(id, status, amount="100.00", *, hour=8, ocid=None):
    return {
        "id": id,
        "reference_id": f"ref-{id}",
        "phone_number": "254711000001",
        "amount": Decimal(amount),
        "status": status,
        "originator_conversation_id": ocid or f"OC-{id}",
        "initiated_at": at(hour),
    }


def result(id, ocid, code, *, at_time, kind="result"):
    return {
        "id": id,
        "originator_conversation_id": ocid,
        "result_code_text": code,
        "received_at": at_time,
        "kind": kind,
    }


def test_success_rate_counts_completed_against_failed_only():
    frames = Frames.from_records(
        payouts=[
            payout("p1", "completed"),
            payout("p2", "completed"),
            payout("p3", "completed"),
            payout("p4", "failed"),
            payout("p5", "pending"),
            payout("p6", "review"),
        ]
    )

    assert health.payout_success_rate(frames.payouts) == 0.75
    assert health.payout_success_rate(Frames.from_records().payouts) is None


def test_failures_by_code_counts_results_and_distinct_payouts_with_meanings():
    frames = Frames.from_records(
        payouts=[payout("p1", "failed"), payout("p2", "completed")],
        results=[
            result("r1", "OC-p1", "17", at_time=at(8, 1)),
            result("r2", "OC-p1", "17", at_time=at(8, 5)),
            result("r3", "OC-p2", "2040", at_time=at(8, 1)),
            result("r4", "OC-p2", "0", at_time=at(8, 9)),
            result("r5", "OC-p2", None, at_time=at(8, 9), kind="timeout"),
        ],
    )

    failures = health.failures_by_code(frames)

    assert failures[["result_code", "results", "payouts", "retryable"]].values.tolist() == [
        ["17", 2, 1, True],
        ["2040", 1, 1, False],
    ]
    assert failures["meaning"].iloc[1] == "recipient is not a registered M-Pesa customer"


def test_time_to_result_is_from_initiation_to_the_first_result():
    frames = Frames.from_records(
        payouts=[payout("p1", "completed", hour=8), payout("p2", "pending", hour=9)],
        results=[
            result("r1", "OC-p1", "0", at_time=at(8, 0, 40)),
            result("r2", "OC-p1", "0", at_time=at(8, 3)),
            result("r3", "OC-p2", None, at_time=at(9, 30), kind="timeout"),
        ],
    )

    timing = health.time_to_result(frames)

    assert timing[["payout_id", "seconds"]].values.tolist() == [["p1", 40.0]]
    assert health.percentiles(timing["seconds"]) == {"count": 1, "p50": 40.0, "p95": 40.0}
    assert health.percentiles(pd.Series([], dtype="float64"))["p50"] is None


@pytest.mark.parametrize(
    ("status", "hour", "listed"),
    [
        ("pending", 8, "stale"),
        ("unknown", 8, "stale"),
        ("submitting", 8, "stale"),
        ("pending", 11, None),  # 20 minutes old at 11:20: within the threshold
        ("review", 11, "review"),
        ("completed", 8, None),
        ("failed", 8, None),
    ],
)
def test_stale_and_review_lists_old_open_payouts_and_review(status, hour, listed):
    frames = Frames.from_records(payouts=[payout("p1", status, hour=hour)])

    attention = health.stale_and_review(frames.payouts, as_of=at(11, 20), stale_after_minutes=30)

    assert attention["why"].tolist() == ([listed] if listed else [])
    # named as a person looks a payout up (GET /payouts/<reference_id>), its id beside it
    assert attention[["reference_id", "payout_id"]].values.tolist() == (
        [["ref-p1", "p1"]] if listed else []
    )


def test_retry_outcomes_group_payouts_with_more_than_one_attempt_by_status():
    frames = Frames.from_records(
        payouts=[
            payout("p1", "completed", "100.00"),
            payout("p2", "failed", "250.00"),
            payout("p3", "completed", "300.00"),
        ],
        attempts=[
            {"payout_id": "p1", "originator_conversation_id": "A1"},
            {"payout_id": "p1", "originator_conversation_id": "A2"},
            {"payout_id": "p2", "originator_conversation_id": "B1"},
            {"payout_id": "p2", "originator_conversation_id": "B2"},
            {"payout_id": "p2", "originator_conversation_id": "B3"},
            {"payout_id": "p3", "originator_conversation_id": "C1"},
        ],
    )

    assert health.retries(frames)[["reference_id", "attempts"]].values.tolist() == [
        ["ref-p1", 2],
        ["ref-p2", 3],
    ]
    assert health.to_records(health.retry_outcomes(frames)) == [
        {"status": "completed", "payouts": 1, "kes": "100.00"},
        {"status": "failed", "payouts": 1, "kes": "250.00"},
    ]


def stk(id, status, code, amount="100.00", paid=None, *, created=None):
    return {
        "id": id,
        "status": status,
        "result_code": code,
        "amount": Decimal(amount),
        "paid_amount": None if paid is None else Decimal(paid),
        "created_at": created or at(8),
        "phone_number": "254722000001",
    }


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        ("completed", "0", "paid"),
        ("amount_mismatch", "0", "paid"),
        ("failed", "1032", "cancelled"),
        ("failed", "1037", "timeout"),
        ("failed", "1019", "timeout"),
        ("failed", None, "timeout"),  # expired by the sweep: M-Pesa never answered
        ("pending", None, "open"),
        ("unknown", None, "open"),
        ("failed", "1", "failed"),
        ("failed", "2001", "failed"),
    ],
)
def test_stk_outcome_of_each_status_and_code(status, code, outcome):
    frames = Frames.from_records(stk=[stk("s1", status, code)])

    assert health.stk_outcome(frames.stk).tolist() == [outcome]


def test_stk_rates_are_shares_of_all_requests():
    frames = Frames.from_records(
        stk=[
            stk("s1", "completed", "0"),
            stk("s2", "completed", "0"),
            stk("s3", "failed", "1032"),
            stk("s4", "pending", None),
        ]
    )

    assert health.stk_rates(frames.stk) == {
        "paid": 0.5,
        "cancelled": 0.25,
        "timeout": 0.0,
        "failed": 0.0,
        "open": 0.25,
    }


def test_underpayments_list_collections_paid_short_only():
    frames = Frames.from_records(
        stk=[
            stk("s1", "amount_mismatch", "0", "1000.00", "900.00"),
            stk("s2", "amount_mismatch", "0", "500.00", "550.00"),
            stk("s3", "completed", "0", "100.00", "100.00"),
        ]
    )

    short = health.underpayments(frames.stk)

    assert health.to_records(short[["payment_id", "requested", "paid", "short"]]) == [
        {"payment_id": "s1", "requested": "1000.00", "paid": "900.00", "short": "100.00"}
    ]


def test_time_to_callback_is_from_request_to_the_first_callback():
    frames = Frames.from_records(
        stk=[stk("s1", "completed", "0", created=at(8)), stk("s2", "pending", None)]
    )
    callbacks = pd.DataFrame(
        {
            "payment_id": ["s1", "s1"],
            "received_at": pd.to_datetime([at(8, 0, 25), at(8, 2)]),
        }
    )

    timing = health.time_to_callback(frames.stk, callbacks)

    assert timing[["payment_id", "outcome", "seconds"]].values.tolist() == [["s1", "paid", 25.0]]


def test_days_are_nairobi_days():
    frames = Frames.from_records(
        payouts=[
            payout("p1", "completed", hour=20),  # 23:00 in Nairobi: 5 November
            payout("p2", "failed", hour=21),  # 00:00 in Nairobi: 6 November
        ]
    )

    per_day = health.payouts_per_day(frames.payouts)

    assert per_day[["day", "payouts", "completed", "failed"]].values.tolist() == [
        ["2025-11-05", 1, 1, 0],
        ["2025-11-06", 1, 0, 1],
    ]


def test_findings_per_day_leaves_out_findings_without_a_time():
    findings = pd.DataFrame(
        {
            "check": ["failed_result", "failed_result", "statement_integrity"],
            "occurred_at": [at(8), at(22), None],
        }
    )

    table = health.findings_per_day(findings, CHECK_NAMES)

    assert list(table.columns) == list(CHECK_NAMES)
    assert table["failed_result"].to_dict() == {"2025-11-05": 1, "2025-11-06": 1}
    assert table["statement_integrity"].sum() == 0


def test_recorded_values_are_json():
    frame = pd.DataFrame(
        {"amount": [Decimal("1.50")], "when": [pd.Timestamp(at(8))], "n": [pd.NA], "k": [3]}
    )

    assert json.loads(json.dumps(health.to_records(frame))) == [
        {"amount": "1.50", "when": "2025-11-05 08:00:00", "n": None, "k": 3}
    ]
