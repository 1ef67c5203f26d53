"""The service context: the `Service` every route, job and command runs with, and `ApiError`,
the refusal a request ends in. (The name `service` is the top-level entrypoint's.)"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from mpesa_service.callback_auth import CallbackPolicy
from mpesa_service.daraja import DarajaClient
from mpesa_service.journal import Journal
from mpesa_service.settings import ApiKey, Settings


class ApiError(Exception):
    """A request the API refuses: HTTP status, a message naming what was wrong, extra fields."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


@dataclass
class Service:
    """Everything the routes, jobs and commands share: settings, database, Daraja client,
    journal, callback policy, API keys and the callback URLs handed to Daraja."""

    settings: Settings
    engine: sa.Engine
    client: DarajaClient | None = None
    journal: Journal | None = None
    policy: CallbackPolicy | None = None
    keys: list[ApiKey] = field(default_factory=list)
    public_base_url: str = ""
    job_runs: dict = field(default_factory=dict)  # job id -> its last jobs.JobRun
    callback_writer: object = None  # throughput.writer.callback_writer(svc), made by build_service

    def hook_url(self, *parts: str) -> str:
        return "/".join([self.public_base_url.rstrip("/"), "hooks", *parts, self.policy.token])

    @property
    def b2c_result_url(self) -> str:
        return self.settings["MPESA_RESULT_URL"] or self.hook_url("b2c", "result")
