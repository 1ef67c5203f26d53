"""Bulk payouts from a file, over real HTTP against the simulator, on SQLite and MariaDB: a
200-row file with planted bad rows is checked (each named by line and why) and refused unless
they are explicitly left out; the uploader's key may not approve it (403, audited); a second
key's approval has the batch job send every good row once, each completed or failed with its
meaning; the result file says the same; the same file uploaded again makes no new payout."""

import csv
import email
import email.policy
import io
import threading
import uuid

import openpyxl
import pytest
import requests

from mpesa_service.batches import XLSX_TYPE, send_batches
from mpesa_service.jobs import run_batches
from tests.service_support import API_KEY, wait_until

MAKER, CHECKER = "maker-secret-1", "checker-secret-1"
KEYS = f"{API_KEY},maker:initiate+operator+read:{MAKER},checker:operator+read:{CHECKER}"
BULK = {
    "API_KEYS": KEYS,
    "PAYOUT_MAX_AMOUNT": "100000",
    "BULK_PAYOUTS_PER_SECOND": "100",
    "APPROVAL_ABOVE": "50000",
}
HEADER = ["reference", "user_id", "phone", "amount", "reason", "description"]
UNREGISTERED, NO_SUCH_PHONE = "254711002040", "254711000003"


def as_key(secret):
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def ops(make_stack):
    return make_stack(BULK)


def good_rows(count: int, prefix: str) -> list[list]:
    """`count` rows that pass; every 50th to a phone the simulator fails (2040, SFC_IC0003)."""
    rows = []
    for n in range(count):
        phone = "0712345678"
        if n % 50 == 7:
            phone = UNREGISTERED
        elif n % 50 == 8:
            phone = NO_SUCH_PHONE
        rows.append([f"{prefix}-{n:03}", f"coach-{n % 40}", phone, 100 + n, "weekly", "Earnings"])
    return rows


def csv_bytes(rows: list[list], header=HEADER) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def upload(stack, content: bytes, secret=MAKER, skip=False, content_type="text/csv"):
    params = {"skip_bad_rows": "1"} if skip else {}
    headers = {**as_key(secret), "Content-Type": content_type}
    return requests.post(
        f"{stack.base_url}/payouts/batches",
        data=content,
        headers=headers,
        params=params,
        timeout=30,
    )


def decide(stack, batch_id, verb, secret=CHECKER, reason="checked against the timesheets"):
    return stack.post(
        f"/payouts/batches/{batch_id}/{verb}", {"reason": reason}, headers=as_key(secret)
    )


def batch(stack, batch_id):
    return stack.get(f"/payouts/batches/{batch_id}").json()


def run_until_finished(stack, batch_id, timeout=60.0):
    def finished():
        send_batches(stack.svc)
        return (detail := batch(stack, batch_id))["status"] == "finished" and detail

    return wait_until(finished, timeout=timeout, interval=0.2)


def b2c_sent(stack) -> list[dict]:
    return stack.sim_requests("/mpesa/b2c/v3/paymentrequest")


def planted_file(stack, count=200) -> tuple[bytes, dict]:
    """A file of `count` good rows and, between them, bad rows, each with the reason the report
    must give for its line."""
    used = stack.post(
        "/payouts",
        {"user_id": "u-1", "phone": "0712345678", "amount": 50, "reference_id": "paid-before"},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert used.status_code == 201, used.text
    good = good_rows(count, "wk49")
    bad = [
        ["bad-phone", "coach-1", "0612345678", 100, "weekly", ""],
        ["bad-cents", "coach-1", "0712345678", "10.50", "weekly", ""],
        ["bad-zero", "coach-1", "0712345678", "0", "weekly", ""],
        ["bad-negative", "coach-1", "0712345678", "-100", "weekly", ""],
        ["bad-over", "coach-1", "0712345678", 150000, "weekly", ""],
        ["bad-no-user", "", "0712345678", 100, "weekly", ""],
        ["paid-before", "coach-1", "0712345678", 100, "weekly", ""],
        ["twice", "coach-1", "0712345678", 100, "weekly", ""],
        ["twice", "coach-2", "0712345678", 200, "weekly", ""],
    ]
    rows = good[:60] + bad[:5] + good[60:130] + bad[5:] + good[130:]
    lines = {tuple(row): n for n, row in enumerate(rows, 2)}
    expected = {
        lines[tuple(bad[0])]: "phone: not a Kenyan mobile number: '0612345678'",
        lines[tuple(bad[1])]: "amount: must be whole shillings, not '10.50'",
        lines[tuple(bad[2])]: "amount: must be between 10 and 250,000 shillings, not '0'",
        lines[tuple(bad[3])]: "amount: must be whole shillings in digits",
        lines[tuple(bad[4])]: "amount 150,000 exceeds PAYOUT_MAX_AMOUNT 100,000",
        lines[tuple(bad[5])]: "missing user_id",
        lines[tuple(bad[6])]: "reference 'paid-before' already belongs to a payout",
        lines[tuple(bad[7])]: "reference 'twice' is on lines",
        lines[tuple(bad[8])]: "reference 'twice' is on lines",
    }
    return csv_bytes(rows), expected


def test_a_file_with_bad_rows_is_refused_with_each_named_by_line_and_reason(ops):
    content, expected = planted_file(ops)
    refused = upload(ops, content)
    assert refused.status_code == 422, refused.text
    report = refused.json()["report"]
    named = {bad["line"]: bad["reason"] for bad in report["bad_rows"]}
    assert sorted(named) == sorted(expected)
    for line, reason in expected.items():
        assert named[line].startswith(reason), (line, named[line])
    assert report["totals"] == {
        "count": 200,
        "amount": sum(100 + n for n in range(200)),
        "largest": 299,
    }
    assert [row["reference"] for row in report["already_there"]] == ["paid-before"]
    assert report["limits"]["PAYOUT_DAILY_LIMIT"]["batch"] == report["totals"]["amount"]
    assert len(b2c_sent(ops)) == 1  # the payout made before: nothing of the file


def test_the_whole_batch_approved_by_a_second_key_is_paid_once_row_by_row(ops):
    content, expected = planted_file(ops)
    created = upload(ops, content, skip=True)
    assert created.status_code == 201, created.text
    answer = created.json()
    batch_id = answer["batch_id"]
    assert (answer["status"], answer["row_count"], len(answer["report"]["bad_rows"])) == (
        "awaiting_approval",
        200,
        len(expected),
    )
    assert answer["counts"] == {"awaiting_approval": 200}
    send_batches(ops.svc)
    assert len(b2c_sent(ops)) == 1  # nothing sent before the approval

    mine = decide(ops, batch_id, "approve", secret=MAKER)
    assert mine.status_code == 403, mine.text
    assert mine.json()["error"] == (
        f"API key maker uploaded batch {batch_id}: another operator's key must approve it"
    )
    assert ("maker", "approve_refused") in {
        (h["actor"], h["action"]) for h in batch(ops, batch_id)["history"]
    }
    assert decide(ops, batch_id, "approve").status_code == 200

    done = run_until_finished(ops, batch_id)
    failing = {UNREGISTERED, NO_SUCH_PHONE}
    assert done["progress"] == {"rows": 200, "sent": 200, "settled": 200, "percent": 100}
    for row in done["rows"]:
        if row["phone_number"] in failing:
            assert row["status"] == "failed" and row["result_meaning"], row
        else:
            assert row["status"] == "completed" and row["transaction_id"], row
    assert done["counts"] == {"completed": 192, "failed": 8}
    paid = [entry for entry in ops.sim.ledger() if entry["kind"] == "b2c"]
    assert len(paid) == 193  # the 192 rows and the payout made before, each once
    assert len({entry["originator_conversation_id"] for entry in paid}) == 193

    result = list(
        csv.DictReader(io.StringIO(ops.get(f"/payouts/batches/{batch_id}/result.csv").text))
    )
    assert [(r["reference_id"], r["status"], r["transaction_id"]) for r in result] == [
        (row["reference_id"], row["status"], row["transaction_id"] or "") for row in done["rows"]
    ]
    book = openpyxl.load_workbook(
        io.BytesIO(ops.get(f"/payouts/batches/{batch_id}/result.xlsx").content)
    )
    assert book["result"].max_row == 201


def test_the_same_file_again_makes_no_new_payout_and_says_which_rows_were_there(ops):
    rows = good_rows(5, "again")
    first = upload(ops, csv_bytes(rows)).json()["batch_id"]
    decide(ops, first, "approve")
    run_until_finished(ops, first)
    again = upload(ops, csv_bytes(rows))
    assert again.status_code == 422
    there = again.json()["report"]["already_there"]
    assert [row["line"] for row in there] == [2, 3, 4, 5, 6]
    also = upload(ops, csv_bytes(rows), skip=True)
    assert (also.status_code, also.json()["error"]) == (422, "no row left to pay")
    assert len(b2c_sent(ops)) == 5


def test_two_approvals_at_once_one_wins_and_rows_are_sent_once(make_stack):
    stack = make_stack({**BULK, "API_KEYS": KEYS + ",checker2:operator:c2-secret"})
    batch_id = upload(stack, csv_bytes(good_rows(10, "race"))).json()["batch_id"]
    answers = []
    threads = [
        threading.Thread(
            target=lambda s=s: answers.append(decide(stack, batch_id, "approve", secret=s))
        )
        for s in (CHECKER, "c2-secret")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200, 409]
    senders = [threading.Thread(target=send_batches, args=(stack.svc,)) for _ in range(2)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    run_until_finished(stack, batch_id)
    assert len(b2c_sent(stack)) == 10


def test_a_rejected_batch_sends_nothing_and_needs_a_reason(ops):
    batch_id = upload(ops, csv_bytes(good_rows(3, "rej"))).json()["batch_id"]
    assert decide(ops, batch_id, "reject", reason="").status_code == 400
    rejected = decide(ops, batch_id, "reject", reason="wrong week")
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["counts"] == {"not sent": 3}
    send_batches(ops.svc)
    assert b2c_sent(ops) == []
    assert decide(ops, batch_id, "approve").status_code == 409


def test_an_xlsx_file_and_a_multipart_form_are_read_like_csv(ops):
    book = openpyxl.Workbook()
    book.active.append(HEADER)
    book.active.append(["x-1", "coach-1", 254712345678, 150, "weekly", "Earnings"])
    book.active.append(["x-2", "coach-2", "0712345678", 10.5, "weekly", "Earnings"])
    buffer = io.BytesIO()
    book.save(buffer)
    refused = upload(ops, buffer.getvalue(), content_type=XLSX_TYPE)
    assert refused.json()["report"]["bad_rows"] == [
        {"line": 3, "reference": "x-2", "reason": "amount: must be whole shillings, not '10.5'"}
    ]
    form = requests.post(
        f"{ops.base_url}/payouts/batches",
        files={"file": ("week.csv", csv_bytes(good_rows(2, "form")), "text/csv")},
        data={"skip_bad_rows": "1"},
        headers=as_key(MAKER),
        timeout=30,
    )
    assert form.status_code == 201, form.text
    assert (form.json()["file_name"], form.json()["row_count"]) == ("week.csv", 2)


def test_a_missing_column_is_named(ops):
    answer = upload(ops, csv_bytes([["r", "u", "0712345678", 100]], header=HEADER[:4]))
    assert answer.status_code == 422
    assert answer.json()["missing_columns"] == ["reason", "description"]


def test_rows_above_approval_above_are_not_held_again_once_the_batch_is_approved(ops):
    batch_id = upload(
        ops, csv_bytes([["big-1", "coach-1", "0712345678", 60000, "bonus", ""]])
    ).json()["batch_id"]
    decide(ops, batch_id, "approve")
    done = run_until_finished(ops, batch_id)
    assert done["rows"][0]["status"] == "completed"
    history = ops.get("/payouts/big-1").json()["history"]
    assert history[0]["note"] == f"approved with batch {batch_id} by checker"


def test_a_finished_batch_is_emailed_to_its_maker_and_checker_with_the_result_file(
    make_stack, smtp_server
):
    recorder, port = smtp_server
    stack = make_stack(
        {
            **BULK,
            "OPERATOR_EMAILS": "maker=maker@example.com,checker=checker@example.com",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(port),
            "SMTP_FROM": "payouts@example.com",
        }
    )
    batch_id = upload(stack, csv_bytes(good_rows(3, "mail"))).json()["batch_id"]
    decide(stack, batch_id, "approve")

    def emailed():
        run_batches(stack.svc)
        return recorder.envelopes

    (envelope,) = wait_until(emailed, timeout=30, interval=0.2)
    assert sorted(envelope.rcpt_tos) == ["checker@example.com", "maker@example.com"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["Subject"].strip() == f"Bulk payout batch {batch_id} finished: 3 completed"
    files = {part.get_filename(): part.get_content() for part in message.iter_attachments()}
    assert sorted(files) == [f"{batch_id}-result.csv", f"{batch_id}-result.xlsx"]
    assert (
        files[f"{batch_id}-result.csv"] == stack.get(f"/payouts/batches/{batch_id}/result.csv").text
    )
    run_batches(stack.svc)
    assert len(recorder.envelopes) == 1  # once


def test_the_cli_uploads_a_file_with_its_report_and_shows_the_batchs_progress(ops, tmp_path):
    from tests.test_entrypoint import run_service

    path = tmp_path / "week.csv"
    path.write_bytes(csv_bytes([*good_rows(2, "cli"), ["cli-bad", "coach-1", "0712", 100, "", ""]]))
    environ = {
        "DATABASE_URL": ops.svc.settings["DATABASE_URL"],
        "CALLBACK_JOURNAL_PATH": str(tmp_path / "cli.log"),
        "API_KEYS": KEYS,
    }
    refused = run_service("bulk", str(path), environ=environ)
    assert refused.returncode == 1
    assert "line 4: phone: not a Kenyan mobile number" in refused.stdout
    made = run_service("bulk", str(path), "--skip-bad-rows", "--actor", "ops-anne", environ=environ)
    assert made.returncode == 0, made.stderr
    assert "2 good rows, KES 201, largest KES 101" in made.stdout
    batch_id = made.stdout.split("batch ")[-1].split(":")[0]
    assert batch(ops, batch_id)["created_by"] == "ops-anne"
    decide(ops, batch_id, "approve", secret=MAKER)  # a key other than ops-anne
    run_until_finished(ops, batch_id)
    status = run_service("bulk-status", batch_id, environ=environ)
    assert status.stdout.strip() == (
        f"batch {batch_id}: finished; 2/2 settled (100%), 2 sent; 2 completed"
    )


def test_the_report_names_the_users_a_batch_would_take_over_their_daily_limit(make_stack):
    stack = make_stack({**BULK, "PAYOUT_USER_DAILY_LIMIT": "1000", "PAYOUT_DAILY_LIMIT": "5000"})
    rows = [
        ["lim-1", "coach-1", "0712345678", 600, "", ""],
        ["lim-2", "coach-1", "0712345678", 600, "", ""],
    ]
    rows.append(["lim-3", "coach-2", "0712345678", 300, "", ""])
    answer = upload(stack, csv_bytes(rows)).json()
    limits = answer["report"]["limits"]
    assert limits["PAYOUT_DAILY_LIMIT"] == {
        "limit": 5000,
        "used_today": 0,
        "batch": 1500,
        "would_reach": 1500,
        "over": False,
    }
    (over,) = limits["PAYOUT_USER_DAILY_LIMIT"]["users_over"]
    assert (over["user_id"], over["would_reach"], over["over"]) == ("coach-1", 1200, True)
    decide(stack, answer["batch_id"], "approve")
    done = run_until_finished(stack, answer["batch_id"])
    assert [row["status"] for row in done["rows"]] == ["completed", "refused", "completed"]
    assert "over PAYOUT_USER_DAILY_LIMIT 1,000" in done["rows"][1]["result_desc"]
    assert len(b2c_sent(stack)) == 2


def test_without_bulk_approval_a_batch_is_sent_at_once_and_big_rows_wait_on_their_own(make_stack):
    stack = make_stack({**BULK, "BULK_REQUIRES_APPROVAL": "0"})
    rows = [
        ["own-1", "coach-1", "0712345678", 500, "", ""],
        ["own-2", "coach-2", "0712345678", 60000, "", ""],
    ]
    answer = upload(stack, csv_bytes(rows)).json()
    assert answer["status"] == "sending"
    send_batches(stack.svc)
    detail = wait_until(
        lambda: (d := batch(stack, answer["batch_id"]))["rows"][0]["status"] == "completed" and d
    )
    assert detail["rows"][1]["status"] == "awaiting_approval"
    assert detail["status"] == "sending"  # until the big row is decided
    assert stack.post("/payouts/own-2/reject", {"reason": "too much"}, headers=as_key(CHECKER)).ok
    assert run_until_finished(stack, answer["batch_id"])["counts"] == {
        "completed": 1,
        "rejected": 1,
    }
