"""Errors as `application/problem+json` (RFC 9457), for every status the API can return.

Bodies carry type, title, status, detail and the request id, and never a stack trace, a
token or an echo of the request's data. A face that answers in HTML (the operator console)
registers `app.extensions["dihya.error_page"]`: a callable that returns a page for the
requests it serves and None for the others, which keep their problem documents.

A store that fails under a request (`StoreUnavailable`, or a database error that escaped
the store's door) is 503 `store-unavailable` with `Retry-After` and the cause's reason
code, never 500: the request did not happen, or happened without its audit event and so
is not answered as done. The store's health logs the cause in words.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import sqlalchemy as sa
from flask import Flask, Response, current_app, g, json
from werkzeug.exceptions import HTTPException

from dihya.reasons import ProblemType
from dihya.store.faults import RETRY_AFTER_S, StoreFault, StoreUnavailable

log = logging.getLogger("dihya.web")

PROBLEM_TYPE_BASE: Final = "urn:dihya:problem:"
MEDIA_TYPE: Final = "application/problem+json"
RATE_LIMITED_DETAIL: Final = ("Too many requests for this token; retry after the number of "
                              "seconds in Retry-After.")


class ApiProblem(Exception):
    """Raise to answer with a problem document."""

    def __init__(self, status: int, slug: ProblemType, title: str, detail: str,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(status: int, slug: ProblemType, title: str, detail: str,
                     headers: dict[str, str] | None = None, **extra: Any) -> Response:
    page = current_app.extensions.get("dihya.error_page")
    response = page(status, title, detail) if page is not None else None
    if response is not None:
        for key, value in (headers or {}).items():
            if key != "WWW-Authenticate":  # a page's reader signs in with a form
                response.headers[key] = value
        return response  # type: ignore[no-any-return]
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status,
                            "detail": detail}
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype=MEDIA_TYPE)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


_SLUGS: Final = {
    400: ProblemType.BAD_REQUEST, 401: ProblemType.UNAUTHORIZED, 403: ProblemType.FORBIDDEN,
    404: ProblemType.NOT_FOUND, 405: ProblemType.METHOD_NOT_ALLOWED, 409: ProblemType.CONFLICT,
    413: ProblemType.PAYLOAD_TOO_LARGE, 415: ProblemType.UNSUPPORTED_MEDIA_TYPE,
    422: ProblemType.VALIDATION, 429: ProblemType.RATE_LIMITED, 500: ProblemType.INTERNAL,
    502: ProblemType.PLUGIN_FAILED, 503: ProblemType.UNAVAILABLE,
}

_DETAILS: Final = {
    404: "No such resource; see /openapi.json for the routes.",
    405: "This method is not allowed on this resource; see the Allow header.",
    413: "The request body is larger than 1 MiB.",
    429: RATE_LIMITED_DETAIL,
}


def install_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiProblem)
    def _api_problem(exc: ApiProblem) -> Response:
        return problem_response(exc.status, exc.slug, exc.title, exc.detail, exc.headers,
                                **exc.extra)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if status == 405 and exc.get_response().headers.get("Allow"):
            headers["Allow"] = exc.get_response().headers["Allow"]
        if status == 429:
            retry = _retry_after(exc)
            headers["Retry-After"] = str(retry)
        detail = _DETAILS.get(status) or (exc.description or exc.name)
        return problem_response(status, _SLUGS.get(status, ProblemType.HTTP_ERROR), exc.name,
                                detail, headers)

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(exc: StoreUnavailable) -> Response:
        return store_unavailable(exc.fault)

    @app.errorhandler(sa.exc.OperationalError)
    @app.errorhandler(sa.exc.InterfaceError)
    @app.errorhandler(sa.exc.TimeoutError)
    def _database_error(exc: Exception) -> Response:
        store = current_app.extensions["dihya"].store
        fault = store.fault_of(exc)
        store.health.failed(fault)
        return store_unavailable(fault)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        # The type and where, never the message (it may carry request data) or a trace
        # in the response.
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
        log.error("internal error %s at %s request_id=%s", type(exc).__name__, where,
                  g.get("request_id"),
                  extra={"reason": type(exc).__name__, "action": where,
                         "request_id": g.get("request_id")})
        return problem_response(500, ProblemType.INTERNAL, "Internal Server Error",
                                "The server failed to answer; the request id identifies it "
                                "in the server's log.")


def store_unavailable(fault: StoreFault) -> Response:
    """503: the state store failed (`fault` says how); the client may retry later."""
    return problem_response(
        503, ProblemType.STORE_UNAVAILABLE, "Service Unavailable",
        f"The state store is unavailable ({fault.describe()}): the request was not "
        "completed, or not recorded in the audit log, so it is not answered as done. Retry "
        "after the number of seconds in Retry-After.",
        {"Retry-After": str(RETRY_AFTER_S)}, reason=fault.value)


def _retry_after(exc: HTTPException) -> int:
    """A 429 raised outside the per-token limiter (which answers with its own `ApiProblem`)."""
    return 60
