"""HTTP routes: thin handlers that parse, call one function and answer JSON."""

from __future__ import annotations

import functools
import json
import re

import bottle
import sqlalchemy as sa

from mpesa_service import PROJECT_DIR, __version__, log
from mpesa_service.api_keys import bearer_key
from mpesa_service.approval import Decision, approve_payout, reject_payout
from mpesa_service.batches import (
    XLSX_TYPE,
    BatchDecision,
    Upload,
    approve_batch,
    batch_detail,
    reject_batch,
    result_file,
    upload_batch,
)
from mpesa_service.c2b import C2B_HOOKS, list_c2b_payments, our_shortcodes, validation_answer
from mpesa_service.callback_auth import client_address
from mpesa_service.callbacks import json_or_problem, receive_callback, refuse_delivery
from mpesa_service.console import add_console
from mpesa_service.context import ApiError, Service
from mpesa_service.events import EventNotFound, list_events, redeliver
from mpesa_service.jobs import journal_space_problem, prometheus_text
from mpesa_service.journal import REFUSED_HEAD_BYTES
from mpesa_service.operator import requery_payout, resolve_payout
from mpesa_service.parsing import parse_result_callback, read_json
from mpesa_service.payment_claims import confirm_payment_claim
from mpesa_service.payouts import Maker, initiate_payout, list_payouts, payout_detail
from mpesa_service.reversals import ReversalRequest, reverse_collection
from mpesa_service.settings import ApiKey
from mpesa_service.stk import initiate_stk, query_stk
from mpesa_service.storage import database_is_reachable, is_database_unavailable

# Thin handlers: parse, call one function, answer JSON. ApiError becomes its status and message.


def json_response(status: int, body: dict) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(
        json.dumps(body), status=status, headers={"Content-Type": "application/json"}
    )


def database_unavailable(error: sa.exc.OperationalError) -> str:
    """503 with Retry-After: the request may be tried again (payout initiation is idempotent on
    its key, and an STK push gets here only before its prompt is sent)."""
    log.warning(
        "database unavailable on %s %s: %s", bottle.request.method, bottle.request.path, error.orig
    )
    bottle.response.status = 503
    bottle.response.set_header("Retry-After", "5")
    return json.dumps({"error": "the database is unavailable; try again shortly"})


def api(handler):
    """Turn ApiError into a JSON error answer naming what was wrong."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except ApiError as error:
            return json_response(error.status, {"error": error.message, **error.extra})

    return wrapper


def read_body(limit: int) -> bytes:
    length = bottle.request.content_length
    if length > limit:
        raise ApiError(413, f"body of {length} bytes is over the {limit}-byte limit")
    body = bottle.request.body.read(limit + 1)
    if len(body) > limit:
        raise ApiError(413, f"body is over the {limit}-byte limit")
    return body


def json_object(limit: int) -> dict:
    body = read_body(limit)
    try:
        value = read_json(body or b"null")
    except ValueError:
        raise ApiError(400, "body must be JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "body must be a JSON object")
    return value


def peer_address() -> str:
    return bottle.request.environ.get("REMOTE_ADDR", "")


def make_app(svc: Service) -> bottle.Bottle:
    app = bottle.Bottle()
    limit = svc.settings.integer("CALLBACK_MAX_BYTES")
    require = role_check(svc)
    add_health_routes(app, svc, require)
    add_collection_routes(app, svc, require, limit)
    add_payout_routes(app, svc, require, limit)
    add_batch_routes(app, svc, require, limit)
    add_event_routes(app, svc, require)
    add_c2b_routes(app, svc, require)
    add_callback_routes(app, svc, limit)
    add_console(app, svc)
    add_error_pages(app)
    return app


def role_check(svc: Service):
    """require(*roles): the caller's API key, which must have one of `roles`: 401 without a
    valid key, 403 without the role."""

    def require(*roles: str) -> ApiKey:
        key = bearer_key(bottle.request.get_header("Authorization", ""), svc.keys)
        if key is None:
            raise ApiError(401, "Authorization: a valid Bearer API key is required")
        if not key.roles & set(roles):
            raise ApiError(403, f"API key {key.name} lacks the {' or '.join(roles)} role")
        return key

    return require


def add_health_routes(app: bottle.Bottle, svc: Service, require) -> None:
    @app.get("/healthz")
    def healthz():
        reachable = database_is_reachable(svc.engine)
        space = journal_space_problem(svc)
        healthy = reachable and space is None
        bottle.response.status = 200 if healthy else 503
        return {
            "status": "ok" if healthy else "degraded",
            "version": __version__,
            "environment": svc.settings.environment,
            "database": "ok" if reachable else "unreachable",
            "journal": space or "ok",
        }

    @app.get("/metrics")
    @api
    def metrics():
        require("read", "operator")  # payout volumes are the business's, not the public's
        bottle.response.content_type = "text/plain; version=0.0.4"
        return prometheus_text(svc)

    @app.get("/openapi.json")
    def openapi():
        return bottle.static_file("openapi.json", root=str(PROJECT_DIR))


def add_collection_routes(app: bottle.Bottle, svc: Service, require, limit: int) -> None:
    @app.post("/payments/mpesa/stk-initiate")
    @api
    def stk_initiate():
        require("initiate")
        key = bottle.request.get_header("Idempotency-Key", "")
        status, answer = initiate_stk(svc, json_object(limit), key)
        return json_response(status, answer)

    @app.post("/payments/mpesa/stk-query")
    @api
    def stk_query():
        require("initiate", "read")
        checkout_request_id = json_object(limit).get("checkout_request_id")
        if not isinstance(checkout_request_id, str) or not checkout_request_id:
            raise ApiError(400, "checkout_request_id: required", field="checkout_request_id")
        return query_stk(svc, checkout_request_id)

    @app.post("/payments/<payment_id>/reverse")
    @api
    def reverse(payment_id):
        key = require("operator")
        request = ReversalRequest.from_body(payment_id, json_object(limit), key.name)
        status, answer = reverse_collection(svc, request)
        return json_response(status, answer)

    @app.post("/api.php")
    def legacy_api():
        return legacy_api_call(svc, lambda: require("initiate"), limit)


def add_payout_routes(app: bottle.Bottle, svc: Service, require, limit: int) -> None:
    @app.post("/payouts")
    @api
    def create_payout():
        api_key = require("initiate")
        key = bottle.request.get_header("Idempotency-Key", "")
        status, answer = initiate_payout(svc, json_object(limit), key, Maker(api_key.name))
        return json_response(status, answer)

    @app.get("/payouts/<reference_id>")
    @api
    def get_payout(reference_id):
        require("read", "operator")
        return payout_detail(svc, reference_id)

    @app.get("/payouts")
    @api
    def get_payouts():
        require("read", "operator")
        query = bottle.request.query
        return list_payouts(svc, query.get("status") or None, query.get("since") or None)

    @app.post("/payouts/<reference_id>/resolve")
    @api
    def resolve(reference_id):
        key = require("operator")
        body = json_object(limit)
        return resolve_payout(
            svc,
            reference_id,
            outcome=str(body.get("outcome", "")),
            actor=key.name,
            receipt=body.get("receipt"),
            note=str(body.get("note") or ""),
        )

    @app.post("/payouts/<reference_id>/approve")
    @api
    def approve(reference_id):
        key = require("operator")
        return approve_payout(svc, decision(reference_id, key, json_object(limit)))

    @app.post("/payouts/<reference_id>/reject")
    @api
    def reject(reference_id):
        key = require("operator")
        return reject_payout(svc, decision(reference_id, key, json_object(limit)))

    @app.post("/payouts/<reference_id>/requery")
    @api
    def requery(reference_id):
        key = require("operator")
        return requery_payout(svc, reference_id, actor=key.name)


def decision(reference_id: str, key: ApiKey, body: dict) -> Decision:
    """An approval or rejection by `key`, its `reason` from the body (text, or left out)."""
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ApiError(400, f"reason: text, not {reason!r}", field="reason")
    return Decision(reference_id, key.name, (reason or "").strip())


def add_batch_routes(app: bottle.Bottle, svc: Service, require, limit: int) -> None:
    @app.post("/payouts/batches")
    @api
    def create_batch():
        key = require("operator")
        content, name = uploaded_file(svc.settings.integer("BULK_MAX_BYTES"))
        skip = bottle.request.query.get("skip_bad_rows") or bottle.request.forms.get(
            "skip_bad_rows"
        )
        upload = Upload(content, name, key.name, skip_bad_rows=skip in ("1", "true", "on"))
        return json_response(201, upload_batch(svc, upload))

    @app.get("/payouts/batches/<batch_id>")
    @api
    def get_batch(batch_id):
        require("read", "operator")
        return batch_detail(svc, batch_id)

    @app.post("/payouts/batches/<batch_id>/approve")
    @api
    def approve_whole_batch(batch_id):
        key = require("operator")
        return approve_batch(svc, batch_decision(batch_id, key, json_object(limit)))

    @app.post("/payouts/batches/<batch_id>/reject")
    @api
    def reject_whole_batch(batch_id):
        key = require("operator")
        return reject_batch(svc, batch_decision(batch_id, key, json_object(limit)))

    @app.get("/payouts/batches/<batch_id>/result.csv")
    @api
    def batch_result_csv(batch_id):
        require("read", "operator")
        return result_response(svc, batch_id, "csv")

    @app.get("/payouts/batches/<batch_id>/result.xlsx")
    @api
    def batch_result_xlsx(batch_id):
        require("read", "operator")
        return result_response(svc, batch_id, "xlsx")


FILE_TYPES = {"csv": "text/csv; charset=utf-8", "xlsx": XLSX_TYPE}


def result_response(svc: Service, batch_id: str, kind: str) -> bottle.HTTPResponse:
    """A batch's result file as a download (the API and the console)."""
    content = result_file(svc, batch_id, kind)
    disposition = f'attachment; filename="{batch_id}-result.{kind}"'
    headers = {"Content-Type": FILE_TYPES[kind], "Content-Disposition": disposition}
    return bottle.HTTPResponse(content, status=200, headers=headers)


def uploaded_file(limit: int) -> tuple[bytes, str]:
    """The bulk file: the body itself (text/csv or XLSX), or the multipart form field `file`;
    with its name (the form's file name, or the X-File-Name header)."""
    content_type = bottle.request.content_type.split(";")[0].strip().lower()
    if content_type in ("text/csv", XLSX_TYPE):
        return read_body(limit), bottle.request.get_header("X-File-Name", "")
    if content_type != "multipart/form-data":
        raise ApiError(
            415,
            f"Content-Type: text/csv, {XLSX_TYPE} or multipart/form-data with a `file` field, "
            f"not {content_type or 'none'!r}",
        )
    if bottle.request.content_length > limit + 65536:
        raise ApiError(413, f"body of {bottle.request.content_length} bytes is over the limit")
    upload = bottle.request.files.get("file")
    if upload is None:
        raise ApiError(400, "file: a multipart form field `file` is required", field="file")
    content = upload.file.read(limit + 1)
    if len(content) > limit:
        raise ApiError(413, f"file is over the {limit}-byte limit (BULK_MAX_BYTES)")
    return content, upload.raw_filename or ""


def batch_decision(batch_id: str, key: ApiKey, body: dict) -> BatchDecision:
    """An approval or rejection of a batch by `key`, its `reason` from the body."""
    return BatchDecision(batch_id, key.name, decision(batch_id, key, body).reason)


def add_event_routes(app: bottle.Bottle, svc: Service, require) -> None:
    @app.get("/events")
    @api
    def get_events():
        require("read", "operator")
        query = bottle.request.query
        try:
            found = list_events(svc.engine, query.get("since") or None, query.get("type") or None)
        except ValueError as error:
            field = str(error).split(":", 1)[0]
            raise ApiError(400, str(error), field=field) from None
        return {"events": found}

    @app.post("/events/<event_id>/redeliver")
    @api
    def redeliver_event(event_id):
        require("operator")
        try:
            return redeliver(svc.engine, event_id)
        except EventNotFound:
            raise ApiError(404, f"no event with id {event_id!r}") from None


def add_c2b_routes(app: bottle.Bottle, svc: Service, require) -> None:
    @app.get("/c2b/payments")
    @api
    def get_c2b_payments():
        require("read", "operator")
        query = bottle.request.query
        return list_c2b_payments(svc, query.get("since") or None, query.get("bill_ref") or None)


def add_callback_routes(app: bottle.Bottle, svc: Service, limit: int) -> None:
    """Daraja's callbacks (authenticated by the token in their URL, not by an API key) and the
    old system's callback URL."""
    for kind, path in CALLBACK_PATHS.items():
        handler = _callback_route(svc, kind, limit)
        if kind == "c2b_validation":
            handler = _validation_route(svc, limit)
        app.post(f"{path}/<token>", callback=handler)
        app.post(path, callback=handler)  # no token at all: refused, but journaled
    # An STK push's CallBackURL names its payment, for when its CheckoutRequestID never got
    # recorded (see stk.apply_stk_callback); a reversal's URLs name the reversal.
    for kind in NAMING_KINDS:
        app.post(
            f"{CALLBACK_PATHS[kind]}/<token>/<payment_id>",
            callback=_callback_route(svc, kind, limit),
        )

    @app.post("/clientpaymentcallback.php")
    def legacy_callback():
        return legacy_result_callback(svc, limit)


def add_error_pages(app: bottle.Bottle) -> None:
    @app.error(404)
    @app.error(405)
    def not_found(error):
        bottle.response.content_type = "application/json"
        return json.dumps({"error": f"{bottle.request.method} {bottle.request.path}: {error.body}"})

    @app.error(500)
    def crashed(error):
        bottle.response.content_type = "application/json"
        if is_database_unavailable(error.exception):
            return database_unavailable(error.exception)
        log.error(
            "unhandled error on %s %s",
            bottle.request.method,
            bottle.request.path,
            exc_info=error.exception,
        )
        return json.dumps({"error": "internal error"})


CALLBACK_PATHS = {
    "stk": "/hooks/stk",
    "b2c_result": "/hooks/b2c/result",
    "b2c_timeout": "/hooks/b2c/timeout",
    "status_result": "/hooks/status/result",
    "status_timeout": "/hooks/status/timeout",
    "balance_result": "/hooks/balance/result",
    "balance_timeout": "/hooks/balance/timeout",
    "reversal_result": "/hooks/reversal/result",
    "reversal_timeout": "/hooks/reversal/timeout",
    "reversal_status_result": "/hooks/reversal/status",
    "reversal_status_timeout": "/hooks/reversal/status-timeout",
    "c2b_validation": C2B_HOOKS["validation"],
    "c2b_confirmation": C2B_HOOKS["confirmation"],
}
# The callbacks whose URL may name what they answer (an STK push's payment, a reversal), for
# when Daraja's own ids never got recorded.
NAMING_KINDS = (
    "stk",
    "reversal_result",
    "reversal_timeout",
    "reversal_status_result",
    "reversal_status_timeout",
)


def _callback_route(svc: Service, kind: str, limit: int):
    @api
    def handle(**segments):
        """`segments`: the URL's token and payment id, those it has."""
        body = _callback_body(svc, kind, limit)
        forwarded = bottle.request.get_header("X-Forwarded-For", "")
        payment_id = segments.get("payment_id", "")
        status, answer = receive_callback(
            svc,
            kind,
            segments.get("token", ""),
            body,
            peer_address(),
            forwarded,
            payment_id=_plausible_id(payment_id),
        )
        return json_response(status, answer)

    return handle


def _validation_route(svc: Service, limit: int):
    """C2B validation: journaled like every callback, then answered accept or reject from its
    body by the settings' rules (c2b.validation_answer), never waiting on the database."""
    shortcodes = our_shortcodes(svc.settings, svc.client.account)

    @api
    def handle(**segments):
        body = _callback_body(svc, "c2b_validation", limit)
        forwarded = bottle.request.get_header("X-Forwarded-For", "")
        token = segments.get("token", "")
        status, answer = receive_callback(
            svc, "c2b_validation", token, body, peer_address(), forwarded
        )
        if status not in (200, 400):  # refused: a wrong token or sender
            return json_response(status, answer)
        raw = body.decode("utf-8", "replace")
        return json_response(200, validation_answer(svc.settings, shortcodes, raw))

    return handle


def _plausible_id(payment_id: str) -> str:
    """A payment id from a callback URL if it looks like one (this service's are UUIDs), else
    "": the callback is still taken, matched by its CheckoutRequestID alone."""
    if PAYMENT_ID.fullmatch(payment_id):
        return payment_id
    if payment_id:
        log.warning("callback URL names no plausible payment id: %.80r", payment_id)
    return ""


PAYMENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _callback_body(svc: Service, kind: str, limit: int) -> bytes:
    """The body; a bounded record of it is journaled as refused when it is over the cap."""
    try:
        return read_body(limit)
    except ApiError:
        head = bottle.request.body.read(REFUSED_HEAD_BYTES)
        size = max(bottle.request.content_length, len(head))
        sender = client_address(
            peer_address(),
            bottle.request.get_header("X-Forwarded-For", ""),
            svc.policy.trusted_proxies,
        )
        refuse_delivery(svc, kind, head, size, sender, "body over the size limit")
        raise


def legacy_result_callback(svc: Service, limit: int):
    """The old B2C ResultURL. Its token comes as ?token= when CALLBACK_TOKEN is set, and it
    answers in the old handler's shape as well as Daraja's."""
    try:
        body = _callback_body(svc, "b2c_result", limit)
    except ApiError as error:
        return json_response(error.status, {"success": False, "message": error.message})
    token = bottle.request.query.get("token", "")
    if not svc.settings["CALLBACK_TOKEN"]:
        token = svc.policy.token
    forwarded = bottle.request.get_header("X-Forwarded-For", "")
    # The old handler answered "processed" after processing, so this one waits until applied.
    status, answer = receive_callback(
        svc, "b2c_result", token, body, peer_address(), forwarded, until_applied=True
    )
    if status != 200:
        return json_response(status, {**answer, "success": False, "message": answer["ResultDesc"]})
    parsed = parse_result_callback(json_or_problem(body.decode("utf-8", "replace"))[0])
    return json_response(
        200,
        {
            **answer,
            "success": True,
            "message": "Callback received and processed",
            "transaction_id": parsed.transaction_id,
        },
    )


def legacy_api_call(svc: Service, authorize, limit: int):
    """The old api.php, answered in the old shape: b2c_payment_initiate starts a payout;
    payment_insert confirms a collection the service holds (see payment_claims)."""
    try:
        api_key = authorize()
        body = json_object(limit)
        action = body.get("action")
        if action == "payment_insert":
            status, answer = confirm_payment_claim(svc, body)
            return json_response(status, answer)
        if action != "b2c_payment_initiate":
            raise ApiError(
                400,
                f"action: must be b2c_payment_initiate or payment_insert, not {action!r}",
                field="action",
            )
        status, data = _legacy_payout(svc, body, api_key.name)
    except ApiError as error:
        return json_response(error.status, {"status": "error", "message": error.message})
    return json_response(status, {"status": "success", "message": "Payout initiated", "data": data})


def _legacy_payout(svc: Service, body: dict, key_name: str) -> tuple[int, dict]:
    key = bottle.request.get_header("Idempotency-Key", "") or str(body.get("reference_id") or "")
    if not key:
        raise ApiError(
            400, "an Idempotency-Key header or a reference_id is required", field="reference_id"
        )
    status, answer = initiate_payout(svc, body, key, Maker(key_name))
    return status, {
        "reference_id": answer["reference_id"],
        "status": answer["status"],
        "amount": answer["amount"],
    }
