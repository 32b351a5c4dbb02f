"""The one error tree of fhir-adapter; every error renders as an OperationOutcome.

Our exception hierarchy (HTTP status, default issue code):

* AdapterError                      500 exception
  + InvalidRequestError             400 invalid     malformed JSON, wrong structure, bad search values
  + AuthenticationError             401 login       no, or no valid, bearer token
  + ForbiddenError                  403 forbidden   the token's scopes do not allow it
  + NotFoundError                   404 not-found   unknown resource or version (or not the caller's)
    - UnknownResourceTypeError      404 not-supported
  + MethodNotAllowedError           405 not-supported
  + NotAcceptableError              406 not-supported
  + ConflictError                   409 conflict
    - InvalidTransitionError        409 conflict    a Task move the state machine forbids
  + PreconditionFailedError         412 conflict    stale If-Match, ambiguous conditional create
  + PayloadTooLargeError            413 too-long
  + UnsupportedMediaTypeError       415 not-supported
  + UnprocessableEntityError        422 processing  profile or business-rule violations
  + TooManyRequestsError            429 throttled   the client's rate limit is spent
  + TemporarilyUnavailableError     503 transient   try again later; nothing accepted is lost
    - DirectoryUnavailableError     503 transient   the provider directory did not answer usefully
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: what is wrong (`code`, `diagnostics`) and where (`expression`)."""

    code: str
    diagnostics: str
    expression: str | None = None
    severity: Severity = "error"

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = [self.expression]
        return issue


def make_outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    """An OperationOutcome resource (as FHIR JSON) carrying `issues`."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


class AdapterError(Exception):
    """Base of every error we raise on purpose; carries its HTTP status and OperationOutcome issues."""

    status_code: ClassVar[int] = 500
    issue_code: ClassVar[str] = "exception"

    def __init__(
        self,
        diagnostics: str = "",
        *,
        expression: str | None = None,
        issues: list[Issue] | None = None,
    ) -> None:
        if issues is None:
            issues = [Issue(code=self.issue_code, diagnostics=diagnostics, expression=expression)]
        self.issues: list[Issue] = issues
        super().__init__(diagnostics or "; ".join(i.diagnostics for i in issues))

    def operation_outcome(self) -> dict[str, Any]:
        return make_outcome(self.issues)

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer must carry (WWW-Authenticate, Retry-After, ...)."""
        return {}


class InvalidRequestError(AdapterError):
    status_code = 400
    issue_code = "invalid"


class AuthenticationError(AdapterError):
    """RFC 6750: no token (no error code) or a bad one (`invalid_token`)."""

    status_code = 401
    issue_code = "login"

    def __init__(self, diagnostics: str, *, error: str | None = "invalid_token") -> None:
        super().__init__(diagnostics)
        self.error = error

    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="fhir-adapter"'
        if self.error:
            challenge += f', error="{self.error}"'
        return {"WWW-Authenticate": challenge}


class ForbiddenError(AdapterError):
    status_code = 403
    issue_code = "forbidden"


class NotFoundError(AdapterError):
    status_code = 404
    issue_code = "not-found"


class UnknownResourceTypeError(NotFoundError):
    issue_code = "not-supported"


class MethodNotAllowedError(AdapterError):
    status_code = 405
    issue_code = "not-supported"

    def __init__(
        self, diagnostics: str = "", *, expression: str | None = None, allow: str = "GET, POST, PUT"
    ) -> None:
        super().__init__(diagnostics, expression=expression)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow}


class NotAcceptableError(AdapterError):
    status_code = 406
    issue_code = "not-supported"


class RequestTimeoutError(AdapterError):
    """The client sent its body too slowly (issue #16: stalled uploads hold memory)."""

    status_code = 408
    issue_code = "timeout"


class ConflictError(AdapterError):
    status_code = 409
    issue_code = "conflict"


class InvalidTransitionError(ConflictError):
    """A Task was asked to move where the state machine does not allow."""


class PreconditionFailedError(AdapterError):
    status_code = 412
    issue_code = "conflict"


class PayloadTooLargeError(AdapterError):
    status_code = 413
    issue_code = "too-long"


class UnsupportedMediaTypeError(AdapterError):
    status_code = 415
    issue_code = "not-supported"


class UnprocessableEntityError(AdapterError):
    status_code = 422
    issue_code = "processing"


class HeadersTooLargeError(AdapterError):
    status_code = 431
    issue_code = "too-long"


class TooManyRequestsError(AdapterError):
    status_code = 429
    issue_code = "throttled"

    def __init__(self, diagnostics: str, *, retry_after: int) -> None:
        super().__init__(diagnostics)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TemporarilyUnavailableError(AdapterError):
    status_code = 503
    issue_code = "transient"


class DirectoryUnavailableError(TemporarilyUnavailableError):
    """The directory did not answer usefully (down, slow, garbage, endless paging): pend, never deny."""

    status_code = 503
    issue_code = "transient"
