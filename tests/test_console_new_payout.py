"""The console's "New payout" form: checked and shown back before anything is sent (masked
phone, amount in words, the name M-Pesa last gave that phone), sent once per form however often
it is submitted (in a real browser too), and audited under the operator. SQLite and MariaDB."""

import re
import threading

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from mpesa_service.new_payout import number_in_words
from mpesa_service.storage import b2c_payments, payout_audit
from tests.service_support import wait_until
from tests.test_console import NEEDS_CHROMIUM, browser_signs_in, csrf_of, signed_in
from tests.test_operator import KEYS

B2C_PATH = "/mpesa/b2c/v3/paymentrequest"
TYPED = {"user_id": "coach-7", "phone": "0712 345 678", "amount": "1500", "reason": "weekly"}


@pytest.fixture
def ops(make_stack):
    return make_stack({"API_KEYS": KEYS})


def form_page(session, stack) -> str:
    page = session.get(f"{stack.base_url}/console/new-payout", timeout=10)
    assert page.status_code == 200
    return page.text


def form_key(page: str) -> str:
    return re.search(r'name="key" value="([^"]+)"', page).group(1)


def checked(session, stack, typed: dict):
    page = form_page(session, stack)
    fields = {**typed, "csrf": csrf_of(page), "key": form_key(page)}
    return session.post(f"{stack.base_url}/console/new-payout/check", data=fields, timeout=10)


def hidden_fields(page: str) -> dict:
    form = page[page.index('id="send"') :]
    return dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form))


def sent_requests(stack) -> list:
    return stack.sim_requests(B2C_PATH)


@pytest.mark.parametrize(
    "number, words",
    [
        (1, "one"),
        (15, "fifteen"),
        (21, "twenty-one"),
        (115, "one hundred and fifteen"),
        (1500, "one thousand five hundred"),
        (2021, "two thousand and twenty-one"),
        (150000, "one hundred and fifty thousand"),
        (1_000_001, "one million and one"),
    ],
)
def test_amounts_read_as_words(number, words):
    assert number_in_words(number) == words


def test_checking_shows_the_payout_back_and_sends_nothing(ops):
    session = signed_in(ops)
    confirm = checked(session, ops, TYPED)
    assert confirm.status_code == 200
    assert "2547****5678" in confirm.text and "254712345678" not in confirm.text
    assert "KES 1,500.00 (one thousand five hundred shillings)" in confirm.text
    assert "has not named this phone" in confirm.text
    assert sent_requests(ops) == []
    assert ops.get("/payouts").json()["payouts"] == []


def test_a_bad_field_is_named_and_the_form_keeps_what_was_typed(ops):
    session = signed_in(ops)
    page = checked(session, ops, {**TYPED, "amount": "1,500"})
    assert page.status_code == 200
    assert "amount" in re.search(r'<p class="error">([^<]+)</p>', page.text).group(1)
    assert 'value="coach-7"' in page.text and 'value="1,500"' in page.text
    assert sent_requests(ops) == []


def test_the_confirmed_payout_is_sent_once_however_often_the_form_is_posted(ops):
    session = signed_in(ops)
    fields = hidden_fields(checked(session, ops, TYPED).text)
    answers = []

    def send():
        answers.append(
            session.post(f"{ops.base_url}/console/new-payout/send", data=fields, timeout=30)
        )

    clicks = [threading.Thread(target=send) for _ in range(3)]
    for click in clicks:
        click.start()
    for click in clicks:
        click.join()
    send()  # and once more after all of them: the page reloaded and submitted again
    pages = {answer.url for answer in answers}
    (reference,) = {url.split("/console/payouts/")[1].split("?")[0] for url in pages}
    assert len(sent_requests(ops)) == 1
    assert [p["reference_id"] for p in ops.get("/payouts").json()["payouts"]] == [reference]
    assert "this form was sent before" in answers[-1].text
    payout = wait_until(lambda: completed(ops, reference))
    assert (payout["amount"], payout["phone_number"]) == (1500, "254712345678")
    (created,) = ops.rows(payout_audit, payout_audit.c.action == "created")
    assert (created.actor, created.status_before, created.status_after) == (
        "ops (console)",
        None,
        "submitting",
    )


def completed(stack, reference: str):
    payout = stack.get(f"/payouts/{reference}").json()
    return payout if payout["status"] == "completed" else None


def test_the_confirmation_names_the_recipient_m_pesa_gave_last_time(ops):
    session = signed_in(ops)
    first = hidden_fields(checked(session, ops, TYPED).text)
    sent = session.post(f"{ops.base_url}/console/new-payout/send", data=first, timeout=30)
    reference = sent.url.split("/console/payouts/")[1].split("?")[0]
    wait_until(lambda: completed(ops, reference))
    (row,) = ops.rows(b2c_payments, b2c_payments.c.reference_id == reference)
    name = row.receiver_name
    assert name
    again = checked(session, ops, {**TYPED, "amount": "200"})
    assert f"2547****5678 · {name}" in again.text
    assert "has not named this phone" not in again.text


def test_a_limit_refusal_is_shown_on_the_form_and_nothing_is_sent(make_stack):
    stack = make_stack({"API_KEYS": KEYS, "PAYOUT_MAX_AMOUNT": "1000"})
    session = signed_in(stack)
    fields = hidden_fields(checked(session, stack, TYPED).text)
    refused = session.post(f"{stack.base_url}/console/new-payout/send", data=fields, timeout=30)
    assert refused.status_code == 200
    assert "exceeds PAYOUT_MAX_AMOUNT" in refused.text
    assert form_key(refused.text) == fields["key"]  # trying again stays one payout
    assert sent_requests(stack) == []


def test_sending_needs_the_forms_csrf_token(ops):
    session = signed_in(ops)
    fields = hidden_fields(checked(session, ops, TYPED).text)
    forged = session.post(
        f"{ops.base_url}/console/new-payout/send", data={**fields, "csrf": "0" * 32}, timeout=10
    )
    assert forged.status_code == 403
    assert sent_requests(ops) == []


@NEEDS_CHROMIUM
def test_a_double_click_on_send_pays_once_in_a_browser(ops, browser):
    browser_signs_in(browser, ops)
    browser.find_element(By.LINK_TEXT, "New payout").click()
    form = browser.find_element(By.ID, "new-payout")
    for name, value in TYPED.items():
        form.find_element(By.NAME, name).send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 15).until(
        expected_conditions.presence_of_element_located((By.ID, "send"))
    )
    assert "one thousand five hundred shillings" in browser.find_element(By.ID, "confirm").text
    send = browser.find_element(By.CSS_SELECTOR, "#send button[type=submit]")
    browser.execute_script("arguments[0].click(); arguments[0].click();", send)
    WebDriverWait(browser, 15).until(expected_conditions.url_contains("/console/payouts/"))
    reference = browser.current_url.split("/console/payouts/")[1].split("?")[0]
    assert [p["reference_id"] for p in ops.get("/payouts").json()["payouts"]] == [reference]
    assert len(sent_requests(ops)) == 1
