"""The console's bulk payouts: a file uploaded through the form (its bad rows shown by line), the
batch page with its progress, approval as the session's key (the uploader's refused) with the
CSRF token, and the result file; in a real browser too. SQLite and MariaDB."""

import re

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.test_bulk import (
    BULK,
    CHECKER,
    MAKER,
    batch,
    csv_bytes,
    good_rows,
    run_until_finished,
    upload,
)
from tests.test_console import NEEDS_CHROMIUM, csrf_of, signed_in


@pytest.fixture
def ops(make_stack):
    return make_stack({**BULK, "CONSOLE_SECRET": "bulk-console-secret"})


def upload_form(stack, session, content: bytes, skip=False) -> requests.Response:
    page = session.get(f"{stack.base_url}/console/batches", timeout=10).text
    data = {"csrf": csrf_of(page), **({"skip_bad_rows": "1"} if skip else {})}
    return session.post(
        f"{stack.base_url}/console/batches/upload",
        data=data,
        files={"file": ("week.csv", content, "text/csv")},
        timeout=30,
    )


def test_a_file_with_a_bad_row_is_shown_back_with_its_line_and_kept_only_when_asked(ops):
    maker = signed_in(ops, MAKER)
    content = csv_bytes(
        [*good_rows(2, "con"), ["con-bad", "coach-1", "0712345678", "10.50", "", ""]]
    )
    refused = upload_form(ops, maker, content)
    assert "1 bad row(s), nothing kept" in refused.text
    assert re.search(
        r"<td class=\"num\">4</td><td>con-bad</td><td>amount: must be whole", refused.text
    )
    kept = upload_form(ops, maker, content, skip=True)
    assert "/console/batches/" in kept.url and "batch uploaded: 2 rows" in kept.text
    assert 'id="progress" value="0" max="2"' in kept.text


def test_the_uploader_cannot_approve_and_another_operator_can_from_the_batch_page(ops):
    batch_id = upload(ops, csv_bytes(good_rows(3, "page"))).json()["batch_id"]
    page_url = f"{ops.base_url}/console/batches/{batch_id}"
    maker = signed_in(ops, MAKER)
    own = maker.post(f"{page_url}/approve", data={"csrf": csrf_of(maker.get(page_url).text)})
    assert "another operator" in own.text and batch(ops, batch_id)["status"] == "awaiting_approval"
    checker = signed_in(ops, CHECKER)
    assert checker.post(f"{page_url}/approve", data={"csrf": "wrong"}).status_code == 403
    approved = checker.post(
        f"{page_url}/approve", data={"csrf": csrf_of(checker.get(page_url).text)}
    )
    assert "batch approved: now sending" in approved.text
    run_until_finished(ops, batch_id)
    page = checker.get(page_url).text
    assert 'id="progress" value="3" max="3"' in page and "completed: 3" in page
    result = checker.get(f"{page_url}/result.csv")
    assert result.text == ops.get(f"/payouts/batches/{batch_id}/result.csv").text
    approvals = checker.get(f"{ops.base_url}/console/approvals").text
    assert batch_id not in approvals


@NEEDS_CHROMIUM
def test_a_batch_is_approved_in_a_browser_from_the_approvals_queue(ops, browser):
    batch_id = upload(ops, csv_bytes(good_rows(4, "web"))).json()["batch_id"]
    browser.get(f"{ops.base_url}/console/login")
    browser.find_element(By.NAME, "key").send_keys(CHECKER)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    browser.find_element(By.LINK_TEXT, "Approvals").click()
    browser.find_element(By.LINK_TEXT, batch_id).click()
    assert browser.find_element(By.ID, "batch-status").text == "awaiting_approval"
    browser.find_element(By.CSS_SELECTOR, "form.approve button[type=submit]").click()
    WebDriverWait(browser, 15).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "batch-status"), "sending")
    )
    assert "batch approved: now sending" in browser.find_element(By.CLASS_NAME, "message").text
    run_until_finished(ops, batch_id)
    browser.refresh()
    assert browser.find_element(By.ID, "batch-status").text == "finished"
    assert browser.find_element(By.ID, "progress").get_attribute("value") == "4"
    assert batch(ops, batch_id)["decided_by"] == "checker"
