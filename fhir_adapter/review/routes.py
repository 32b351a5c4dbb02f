"""The `/review` pages: sign-in, the queue, a request, deciding, a notice's PDF, the numbers.

Cookie-authenticated (a server-side session, accounts.py), not bearer-token FHIR routes: every
form carries the session's CSRF token, every page view and decision is an AuditEvent with the
staff member as agent, and a decision goes through `WorkflowService.decide_by_reviewer`, the very
recorder of `Task/$decide`, so its notices, deliveries and notifications are the same.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from fhir_adapter.access.audit import StaffAuditRecord
from fhir_adapter.bootstrap import Container
from fhir_adapter.codes import NUCC, Reason
from fhir_adapter.errors import AdapterError, InvalidTransitionError, NotFoundError
from fhir_adapter.fhir.references import ID_PATTERN
from fhir_adapter.metrics.core import Period
from fhir_adapter.metrics.render import html_context
from fhir_adapter.policy.decision import Outcome
from fhir_adapter.review.accounts import (
    Session,
    SignInRefusedError,
    StaffAccounts,
    same_token,
)
from fhir_adapter.review.workspace import (
    DENIAL_CODES,
    WHY_SHORT,
    WHY_TEXT,
    Workspace,
    notice_pdf,
)
from fhir_adapter.workflow.review import ReviewerDecision

SESSION_COOKIE = "review_session"
SIGN_IN_COOKIE = "review_sign_in_csrf"
STATIC = Path(__file__).parent / "static"
router = APIRouter(include_in_schema=False)
static_files = StaticFiles(directory=STATIC)


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.PackageLoader("fhir_adapter.review", "templates"),
                jinja2.PackageLoader("fhir_adapter.metrics", "templates"),
            ]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def _accounts(request: Request) -> StaffAccounts:
    found: StaffAccounts | None = getattr(request.app.state, "staff_accounts", None)
    container = _container(request)
    if found is None or found.engine is not getattr(container.store, "engine", None):
        settings = container.settings
        found = StaffAccounts(
            container.store.engine,  # type: ignore[attr-defined]
            max_failures=settings.review_max_failures,
            lockout_seconds=settings.review_lockout_seconds,
            session_seconds=settings.review_session_seconds,
        )
        request.app.state.staff_accounts = found
    return found


def _now(request: Request) -> datetime:
    moment: datetime = _container(request).workflow.clock()
    return moment


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _audit(
    request: Request, action: str, status: int, session: Session | None, entity: str | None = None
) -> None:
    _container(request).audit.record_staff(
        StaffAuditRecord(
            action=action,
            status=status,
            recorded=_now(request),
            staff=session.staff.name if session else None,
            role=session.staff.role.value if session else None,
            address=request.client.host if request.client else None,
            entity=entity,
        )
    )


def _page(
    request: Request,
    template: str,
    *,
    session: Session | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    html = (
        _templates()
        .get_template(template)
        .render(
            session=session,
            csrf=session.csrf if session else "",
            plan_name=_container(request).settings.plan_name,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status)


async def _session(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await _accounts(request).session(token, now=_now(request))


def _to_sign_in(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/review/sign-in?next={quote(target, safe='')}", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form (the body size limit applies already); the first value of a name."""
    body = (await request.body()).decode("utf-8", errors="replace")
    form: dict[str, str] = {}
    for name, value in parse_qsl(body, keep_blank_values=True):
        form.setdefault(name, value)
    return form


def _safe_next(target: str | None) -> str:
    """Only a path of this workspace: never an open redirect to another site."""
    if target and target.startswith("/review") and not target.startswith("//"):
        return target
    return "/review"


# -- sign-in and sign-out ----------------------------------------------------------------------


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    token = secrets.token_urlsafe(32)
    response = _page(
        request,
        "sign_in.html.j2",
        session=None,
        sign_in_csrf=token,
        next=_safe_next(request.query_params.get("next")),
        error=None,
    )
    _set_sign_in_cookie(request, response, token)
    return response


def _set_sign_in_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        path="/review/sign-in",
        httponly=True,
        secure=_secure(request),
        samesite="strict",
        max_age=3600,
    )


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await _form(request)
    target = _safe_next(form.get("next"))
    if not same_token(form.get("csrf"), request.cookies.get(SIGN_IN_COOKIE)):
        _audit(request, "sign-in", 403, None)
        return _refused_csrf(request, None)
    try:
        session, token = await _accounts(request).sign_in(
            form.get("name", ""), form.get("password", ""), now=_now(request)
        )
    except SignInRefusedError as refused:
        _audit(request, "sign-in", 401, None)
        fresh = secrets.token_urlsafe(32)
        page = _page(
            request,
            "sign_in.html.j2",
            session=None,
            status=401,
            sign_in_csrf=fresh,
            next=target,
            error="Sign-in refused: the name or password is wrong, or the account is locked"
            + (" after repeated failures; try again later." if refused.locked else "."),
        )
        _set_sign_in_cookie(request, page, fresh)
        return page
    _audit(request, "sign-in", 200, session)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path="/review",
        httponly=True,
        secure=_secure(request),
        samesite="lax",
        max_age=int((session.expires_at - _now(request)).total_seconds()),
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/review/sign-in")
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    session = await _session(request)
    form = await _form(request)
    if session is None:
        return _to_sign_in(request)
    if not same_token(form.get("csrf"), session.csrf):
        _audit(request, "sign-out", 403, session)
        return _refused_csrf(request, session)
    await _accounts(request).sign_out(request.cookies.get(SESSION_COOKIE, ""))
    _audit(request, "sign-out", 200, session)
    response = RedirectResponse("/review/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/review")
    return response


def _refused_csrf(request: Request, session: Session | None) -> HTMLResponse:
    return _page(
        request,
        "message.html.j2",
        session=session,
        status=403,
        title="Form refused",
        message="This form did not carry a valid security token (it may have expired or come "
        "from another site). Nothing was changed. Go back, reload the page and try again.",
    )


# -- the queue ---------------------------------------------------------------------------------


@router.get("")
async def queue(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_sign_in(request)
    params = request.query_params
    expedited = {"yes": True, "no": False}.get(params.get("expedited", ""))
    reason = params.get("reason") or None
    why = params.get("why") or None
    settings = _container(request).settings
    workspace = Workspace(_container(request), warning_share=settings.deadline_warning_share)
    found = await workspace.queue(_now(request), expedited=expedited, reason=reason, why=why)
    _audit(request, "view-queue", 200, session)
    return _page(
        request,
        "queue.html.j2",
        session=session,
        queue=found,
        filters={
            "expedited": params.get("expedited", ""),
            "reason": reason or "",
            "why": why or "",
        },
        reasons=[r.value for r in Reason],
        why_text=WHY_TEXT,
        why_short=WHY_SHORT,
        warning_percent=round(settings.deadline_warning_share * 100),
    )


# -- a request and its decision ----------------------------------------------------------------


async def _request_page(
    request: Request,
    session: Session,
    task_id: str,
    *,
    status: int = 200,
    error: str | None = None,
) -> Response:
    if not ID_PATTERN.match(task_id):
        return _not_found(request, session)
    settings = _container(request).settings
    workspace = Workspace(_container(request), warning_share=settings.deadline_warning_share)
    view = await workspace.request(task_id, _now(request))
    if view is None:
        _audit(request, "view-request", 404, session)
        return _not_found(request, session)
    candidates = await workspace.candidates(task_id) if view["undecided"] else []
    _audit(request, "view-request", status, session, f"Task/{task_id}")
    default_end = (_now(request) + timedelta(days=90)).date().isoformat()
    return _page(
        request,
        "request.html.j2",
        session=session,
        status=status,
        view=view,
        candidates=candidates,
        error=error,
        default_end=default_end,
        denial_codes=DENIAL_CODES,
    )


def _not_found(request: Request, session: Session) -> HTMLResponse:
    return _page(
        request,
        "message.html.j2",
        session=session,
        status=404,
        title="Not found",
        message="There is no second-opinion request with this id.",
    )


@router.get("/requests/{task_id}")
async def request_page(request: Request, task_id: str) -> Response:
    session = await _session(request)
    if session is None:
        return _to_sign_in(request)
    return await _request_page(request, session, task_id)


@router.post("/requests/{task_id}/decide")
async def decide(request: Request, task_id: str) -> Response:
    session = await _session(request)
    if session is None:
        return _to_sign_in(request)
    form = await _form(request)
    entity = f"Task/{task_id}" if ID_PATTERN.match(task_id) else None
    if not same_token(form.get("csrf"), session.csrf):
        _audit(request, "decide", 403, session, entity)
        return _refused_csrf(request, session)
    if not session.staff.can_decide:
        _audit(request, "decide", 403, session, entity)
        return _page(
            request,
            "message.html.j2",
            session=session,
            status=403,
            title="Not allowed",
            message=f"Your role ({session.staff.role.value}) may read requests but not decide "
            "them. Nothing was changed.",
        )
    review, problem = _review(form, session)
    if review is None:
        _audit(request, "decide", 422, session, entity)
        return await _request_page(request, session, task_id, status=422, error=problem)
    try:
        await _container(request).workflow.decide_by_reviewer(task_id, review)
    except InvalidTransitionError:
        _audit(request, "decide", 409, session, entity)
        return await _request_page(
            request,
            session,
            task_id,
            status=409,
            error="This request was decided elsewhere meanwhile; it was not decided again. "
            "Its decision is shown below.",
        )
    except NotFoundError:
        _audit(request, "decide", 404, session, entity)
        return _not_found(request, session)
    except AdapterError as refused:  # e.g. a provider reference that is not a reference
        _audit(request, "decide", refused.status_code, session, entity)
        return await _request_page(
            request,
            session,
            task_id,
            status=422,
            error=f"The decision was not recorded: {refused.issues[0].diagnostics}",
        )
    _audit(request, "decide", 200, session, entity)
    return RedirectResponse(f"/review/requests/{task_id}?decided=1", status_code=303)


def _review(form: dict[str, str], session: Session) -> tuple[ReviewerDecision | None, str]:
    """The form's decision as the $decide service takes it, or the problem to show."""
    staff = session.staff
    decision = form.get("decision", "")
    provider = form.get("provider", "").strip() or form.get("provider_other", "").strip()
    reason = form.get("reason", "").strip()
    outcome = {o.value: o for o in Outcome}.get(decision)
    until: datetime | None = None
    if outcome not in (
        Outcome.APPROVED_IN_NETWORK,
        Outcome.APPROVED_OUT_OF_NETWORK,
        Outcome.DENIED,
    ):
        return None, "Choose a decision: approve in network, approve out of network, or deny."
    if outcome is not Outcome.DENIED and not provider:
        return None, "An approval names the provider the member may see: pick one."
    if outcome is Outcome.DENIED and not reason:
        return None, "A denial needs its specific reason in your own words."
    if outcome is Outcome.APPROVED_OUT_OF_NETWORK:
        try:
            end = date.fromisoformat(form.get("authorized_until", ""))
        except ValueError:
            return None, "Set the end of the authorization period (a date, YYYY-MM-DD)."
        until = datetime.combine(end, time(23, 59, 59), tzinfo=UTC)
    specialty: dict[str, Any] = {"text": staff.credentials or "reviewer"}
    if staff.specialty:
        specialty["coding"] = [{"system": NUCC, "code": staff.specialty}]
    code = DENIAL_CODES.get(form.get("denial_code", ""))
    if outcome is Outcome.DENIED and code is None:
        return None, "Choose the coded reason for the denial."
    words = f"{code}. {reason}" if outcome is Outcome.DENIED else reason
    return (
        ReviewerDecision(
            outcome=outcome,
            providers=(provider,) if outcome is not Outcome.DENIED else (),
            reason=words or None,
            reviewer=staff.practitioner or f"urn:uuid:{staff.staff_id}",
            reviewer_npi=staff.npi,
            reviewer_specialty=specialty,
            reviewer_display=staff.signature,
            authorized_until=until,
        ),
        "",
    )


# -- a notice's PDF ----------------------------------------------------------------------------


@router.get("/notices/{communication_id}.pdf")
async def notice(request: Request, communication_id: str) -> Response:
    session = await _session(request)
    if session is None:
        return _to_sign_in(request)
    if not ID_PATTERN.match(communication_id):
        return _not_found(request, session)
    async with _container(request).store.transaction(write=False) as tx:
        found = await tx.resources.read("Communication", communication_id)
    pdf = notice_pdf(found.content) if found else None
    if pdf is None:
        _audit(request, "view-notice", 404, session)
        return _not_found(request, session)
    _audit(request, "view-notice", 200, session, f"Communication/{communication_id}")
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"content-disposition": f'inline; filename="notice-{communication_id}.pdf"'},
    )


# -- the plan's numbers ------------------------------------------------------------------------


@router.get("/numbers")
async def numbers(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_sign_in(request)
    now = _now(request)
    today = now.date()
    problem = None
    try:
        start = date.fromisoformat(
            request.query_params.get("start") or today.replace(day=1).isoformat()
        )
        end = date.fromisoformat(request.query_params.get("end") or today.isoformat())
        if end < start:
            raise ValueError("end before start")
    except ValueError:
        problem = "The period must be two dates, YYYY-MM-DD, the end not before the start."
        start, end = today.replace(day=1), today
    container = _container(request)
    report = await container.metrics.report(Period(start, end))
    workspace = Workspace(container, warning_share=container.settings.deadline_warning_share)
    timeliness = await workspace.timeliness(now)
    _audit(request, "view-numbers", 200, session)
    return _page(
        request,
        "numbers.html.j2",
        session=session,
        status=422 if problem else 200,
        problem=problem,
        start=start.isoformat(),
        end=end.isoformat(),
        timeliness=timeliness,
        why_short=WHY_SHORT,
        **html_context(report),
    )
