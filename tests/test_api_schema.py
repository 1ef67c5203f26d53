"""schemathesis against openapi.json on the running service (SQLite and MariaDB): generated
requests for every documented operation never get a 500 and every answer conforms to the
document (status codes, content types, headers, bodies).

Each operation gets its own bounded hypothesis run against one running stack; failures are
collected per operation so one run reports every operation that does not conform."""

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.transport.requests import ManagedCookiesSession

from tests.service_support import API_KEY

SPEC = Path(__file__).resolve().parent.parent / "openapi.json"
EXAMPLES_PER_OPERATION = 30
# What the document promises about answers. (schemathesis's request-side checks,
# positive_data_acceptance and negative_data_rejection, judge how precisely the document
# describes valid input; their findings are listed in docs/evidence.md, not asserted here.)
ANSWER_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SCHEMA_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


def documented_operations():
    schema = schemathesis.openapi.from_path(SPEC)
    return [result.ok() for result in schema.get_all_operations()]


def conformance_failure(operation, base_url: str) -> str | None:
    """None when every generated request for `operation` is answered as documented; else
    the first failure schemathesis reports."""

    # Keep-alive across the operation's requests; schemathesis drops this session's cookies
    # after each, as it does when it makes a session per request.
    session = ManagedCookiesSession()

    @SCHEMA_SETTINGS
    @given(case=operation.as_strategy())
    def call(case):
        case.call_and_validate(
            base_url=base_url,
            session=session,
            headers={"Authorization": f"Bearer {API_KEY}"},
            checks=ANSWER_CHECKS,
        )

    try:
        call()
    except (Exception, BaseExceptionGroup) as failure:  # schemathesis raises FailureGroup
        return f"{operation.label}: {failure}"
    finally:
        session.close()
    return None


def is_callback(operation) -> bool:
    return "/hooks/" in operation.path or operation.path == "/clientpaymentcallback.php"


# Two halves of about the same size, so that parallel workers can take one each.
HALVES = {
    "callbacks": is_callback,
    "api": lambda operation: not is_callback(operation),
}


@pytest.mark.parametrize("half", sorted(HALVES))
def test_every_operation_answers_as_documented(stack, half):
    operations = [op for op in documented_operations() if HALVES[half](op)]
    assert operations, f"no documented operation is in the {half} half"
    failures = [conformance_failure(op, stack.base_url) for op in operations]
    failures = [failure for failure in failures if failure]
    assert not failures, "\n\n".join(failures)
