"""Email a report over SMTP: an HTML body (summary, charts as cid: images), a plain-text
alternative, and findings.csv, summary.csv and report.xlsx attached.

Settings come from environment variables (see SMTP_SETTINGS); the password is never logged nor
shown in a repr.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

log = logging.getLogger("recon.mail")

# name, default, meaning: the table docs/recon.md (and the service's settings) list.
SMTP_SETTINGS = (
    ("SMTP_HOST", "", "SMTP server host name; required to send the report."),
    ("SMTP_PORT", "25", "SMTP server port (587 is usual with STARTTLS, 465 with SSL)."),
    ("SMTP_STARTTLS", "0", "1 to upgrade the connection with STARTTLS."),
    ("SMTP_SSL", "0", "1 to connect over TLS from the start (SMTPS)."),
    ("SMTP_USER", "", "User name for SMTP AUTH; empty means no login."),
    ("SMTP_PASSWORD", "", "Password for SMTP AUTH."),
    ("SMTP_FROM", "recon@localhost", "Sender address of the report."),
    ("RECON_EMAIL_TO", "", "Comma-separated recipients of the scheduled report."),
)


class MailError(Exception):
    """Settings that cannot be used, or a send that failed; the message says which."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "recon@localhost"
    timeout: float = 30

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SmtpSettings:
        """Settings from SMTP_* variables; MailError naming the variable when one is bad."""
        host = environ.get("SMTP_HOST", "").strip()
        if not host:
            raise MailError("SMTP_HOST is not set: cannot send the report by email")
        port = environ.get("SMTP_PORT", "25").strip() or "25"
        if not port.isdigit():
            raise MailError(f"SMTP_PORT must be a whole number, not {port!r}")
        return cls(
            host=host,
            port=int(port),
            starttls=_flag(environ, "SMTP_STARTTLS"),
            ssl=_flag(environ, "SMTP_SSL"),
            user=environ.get("SMTP_USER") or None,
            password=environ.get("SMTP_PASSWORD") or None,
            sender=environ.get("SMTP_FROM") or "recon@localhost",
        )


def recipients_from_environ(environ: Mapping[str, str]) -> list[str]:
    return parse_recipients(environ.get("RECON_EMAIL_TO", ""))


def parse_recipients(text: str | list[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else text
    return [item.strip() for item in items if item.strip()]


def build_message(report, *, to: list[str], sender: str) -> EmailMessage:
    """The email: text and HTML alternatives, charts as related images, files attached."""
    message = EmailMessage()
    message["Subject"] = f"M-Pesa reconciliation: {report.headline}"
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="recon")
    message.set_content(report.render())
    message.add_alternative(report.to_html(images="cid"), subtype="html")
    html_part = message.get_payload()[-1]
    for name, png in report.charts.items():
        html_part.add_related(png, "image", "png", cid=f"<{name}>", filename=name)
    message.add_attachment(report.findings_csv(), "text", "csv", filename="findings.csv")
    message.add_attachment(report.summary_csv(), "text", "csv", filename="summary.csv")
    message.add_attachment(
        report.xlsx_bytes(),
        "application",
        "vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        filename="report.xlsx",
    )
    return message


def send_report(report, *, to: list[str] | str, smtp: SmtpSettings) -> EmailMessage:
    """Send `report` to `to` (a list or a comma-separated string); returns the message sent."""
    recipients = parse_recipients(to)
    if not recipients:
        raise MailError("no recipients: give --email or set RECON_EMAIL_TO")
    message = build_message(report, to=recipients, sender=smtp.sender)
    return send_email(message, to=recipients, smtp=smtp)


def send_email(message: EmailMessage, *, to: list[str] | str, smtp: SmtpSettings) -> EmailMessage:
    """Send any message (a report, the service's alerts) to `to` over `smtp`."""
    recipients = parse_recipients(to)
    if not recipients:
        raise MailError("no recipients")
    try:
        with _connect(smtp) as client:
            if smtp.starttls and not smtp.ssl:
                client.starttls(context=ssl.create_default_context())
            if smtp.user:
                client.login(smtp.user, smtp.password or "")
            client.send_message(message, from_addr=smtp.sender, to_addrs=recipients)
    except (OSError, smtplib.SMTPException) as error:
        raise MailError(f"cannot send via {smtp.host}:{smtp.port}: {error}") from None
    log.info(
        "%r sent to %s via %s:%s", message["Subject"], ", ".join(recipients), smtp.host, smtp.port
    )
    return message


def _connect(smtp: SmtpSettings) -> smtplib.SMTP:
    if smtp.ssl:
        context = ssl.create_default_context()
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
    return smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)


def _flag(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "0").strip().lower()
    if value not in ("0", "1", "", "true", "false", "yes", "no"):
        raise MailError(f"{name} must be 0 or 1, not {value!r}")
    return value in ("1", "true", "yes")
