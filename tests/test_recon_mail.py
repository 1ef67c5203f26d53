"""Emailing the report, received by a real in-process aiosmtpd server."""

from __future__ import annotations

import email
from email import policy

import pytest

from recon.checks import run_checks
from recon.frames import Frames
from recon.mail import MailError, SmtpSettings, recipients_from_environ, send_report
from recon.report import Report
from tests.recon_support import OPTIONS, new_payout, new_result


@pytest.fixture
def report() -> Report:
    frames = Frames.from_records(
        payouts=[new_payout("p01", "1000.00", "completed", ocid="OC1")],
        results=[new_result("r1", ocid="OC1", code=0, amount="100.00", txn="TK1")],
    )
    return Report(findings=run_checks(frames, OPTIONS), options=OPTIONS)


def test_report_email_is_received_with_html_summary_and_attachments(smtp_server, report):
    recorder, port = smtp_server
    settings = SmtpSettings.from_environ(
        {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_FROM": "recon@example.com"}
    )

    send_report(report, to="ops@example.com, finance@example.com", smtp=settings)

    (envelope,) = recorder.envelopes
    assert envelope.mail_from == "recon@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "finance@example.com"]
    message = email.message_from_bytes(envelope.content, policy=policy.default)
    assert message["Subject"] == "M-Pesa reconciliation: 1 findings, KES 900.00 at risk."
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "requested 1,000.00 != paid 100.00" in html
    assert 'src="cid:findings_by_check.png"' in html
    attached = {part.get_filename() for part in message.iter_attachments()}
    assert attached == {"findings.csv", "summary.csv", "report.xlsx"}
    images = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert len(images) == 3


def test_settings_from_environment_with_defaults():
    settings = SmtpSettings.from_environ({"SMTP_HOST": "mail.example.com"})

    assert (settings.port, settings.starttls, settings.ssl, settings.user) == (
        25,
        False,
        False,
        None,
    )


def test_settings_read_every_variable():
    settings = SmtpSettings.from_environ(
        {
            "SMTP_HOST": "mail.example.com",
            "SMTP_PORT": "587",
            "SMTP_STARTTLS": "1",
            "SMTP_SSL": "0",
            "SMTP_USER": "recon",
            "SMTP_PASSWORD": "hunter2",
            "SMTP_FROM": "recon@example.com",
        }
    )

    assert (settings.port, settings.starttls, settings.user) == (587, True, "recon")
    assert settings.sender == "recon@example.com"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    "environ, named",
    [
        ({}, "SMTP_HOST"),
        ({"SMTP_HOST": "h", "SMTP_PORT": "twenty-five"}, "SMTP_PORT"),
        ({"SMTP_HOST": "h", "SMTP_SSL": "maybe"}, "SMTP_SSL"),
    ],
)
def test_bad_settings_are_named(environ, named):
    with pytest.raises(MailError, match=named):
        SmtpSettings.from_environ(environ)


def test_recipients_come_from_recon_email_to():
    assert recipients_from_environ({"RECON_EMAIL_TO": " a@x.com, ,b@x.com "}) == [
        "a@x.com",
        "b@x.com",
    ]


def test_an_unreachable_server_is_a_mail_error_naming_it(report):
    settings = SmtpSettings(host="127.0.0.1", port=1, timeout=2)

    with pytest.raises(MailError, match="127.0.0.1:1"):
        send_report(report, to=["ops@example.com"], smtp=settings)


def test_cli_email_option_sends_the_report_and_says_to_whom_with_what(
    smtp_server, database_url, tmp_path, capsys
):
    from recon.cli import main

    recorder, port = smtp_server
    status = main(
        [
            "--database-url",
            database_url,
            "--out",
            str(tmp_path / "out"),
            "--email",
            "ops@x.com, finance@x.com",
        ],
        environ={"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)},
    )

    assert status == 0
    assert [envelope.rcpt_tos for envelope in recorder.envelopes] == [
        ["ops@x.com", "finance@x.com"]
    ]
    said = capsys.readouterr().err.splitlines()
    assert (
        said.count(
            "emailed the report to ops@x.com, finance@x.com via 127.0.0.1 "
            "with findings.csv, summary.csv, report.xlsx attached"
        )
        == 1
    )
