"""The `/review` pages: the queue, a request, deciding, a notice's PDF, the numbers (signing in
and out: sign_in.py; what the pages share: pages.py).

Cookie-authenticated (a server-side session, accounts.py), not bearer-token FHIR routes: every
form carries the session's CSRF token, every page view and decision is an AuditEvent with the
staff member as agent, and a decision goes through `WorkflowService.decide_by_reviewer`, the very
recorder of `Task/$decide`, so its notices, deliveries and notifications are the same.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from fhir_adapter.codes import NUCC, Reason
from fhir_adapter.errors import AdapterError, InvalidTransitionError, NotFoundError
from fhir_adapter.fhir.references import ID_PATTERN
from fhir_adapter.metrics.core import Period
from fhir_adapter.metrics.render import html_context
from fhir_adapter.policy.decision import Outcome
from fhir_adapter.review import sign_in
from fhir_adapter.review.accounts import Session, same_token
from fhir_adapter.review.pages import (
    audit,
    container_of,
    current_session,
    now_of,
    read_form,
    refused_csrf,
    render_page,
    to_sign_in,
)
from fhir_adapter.review.workspace import (
    DENIAL_CODES,
    WHY_SHORT,
    WHY_TEXT,
    Workspace,
    notice_pdf,
)
from fhir_adapter.workflow.review import ReviewerDecision

STATIC = Path(__file__).parent / "static"
router = APIRouter(include_in_schema=False)
router.include_router(sign_in.router)
static_files = StaticFiles(directory=STATIC)


# -- the queue ---------------------------------------------------------------------------------


@router.get("")
async def queue(request: Request) -> Response:
    session = await current_session(request)
    if session is None:
        return to_sign_in(request)
    params = request.query_params
    expedited = {"yes": True, "no": False}.get(params.get("expedited", ""))
    reason = params.get("reason") or None
    why = params.get("why") or None
    settings = container_of(request).settings
    workspace = Workspace(container_of(request), warning_share=settings.deadline_warning_share)
    found = await workspace.queue(now_of(request), expedited=expedited, reason=reason, why=why)
    audit(request, "view-queue", 200, session)
    return render_page(
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
    settings = container_of(request).settings
    workspace = Workspace(container_of(request), warning_share=settings.deadline_warning_share)
    view = await workspace.request(task_id, now_of(request))
    if view is None:
        audit(request, "view-request", 404, session)
        return _not_found(request, session)
    candidates = await workspace.candidates(task_id) if view["undecided"] else []
    audit(request, "view-request", status, session, f"Task/{task_id}")
    default_end = (now_of(request) + timedelta(days=90)).date().isoformat()
    return render_page(
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
    return render_page(
        request,
        "message.html.j2",
        session=session,
        status=404,
        title="Not found",
        message="There is no second-opinion request with this id.",
    )


@router.get("/requests/{task_id}")
async def request_page(request: Request, task_id: str) -> Response:
    session = await current_session(request)
    if session is None:
        return to_sign_in(request)
    return await _request_page(request, session, task_id)


@router.post("/requests/{task_id}/decide")
async def decide(request: Request, task_id: str) -> Response:
    session = await current_session(request)
    if session is None:
        return to_sign_in(request)
    form = await read_form(request)
    entity = f"Task/{task_id}" if ID_PATTERN.match(task_id) else None
    if not same_token(form.get("csrf"), session.csrf):
        audit(request, "decide", 403, session, entity)
        return refused_csrf(request, session)
    if not session.staff.can_decide:
        audit(request, "decide", 403, session, entity)
        return render_page(
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
        audit(request, "decide", 422, session, entity)
        return await _request_page(request, session, task_id, status=422, error=problem)
    try:
        await container_of(request).workflow.decide_by_reviewer(task_id, review)
    except InvalidTransitionError:
        audit(request, "decide", 409, session, entity)
        return await _request_page(
            request,
            session,
            task_id,
            status=409,
            error="This request was decided elsewhere meanwhile; it was not decided again. "
            "Its decision is shown below.",
        )
    except NotFoundError:
        audit(request, "decide", 404, session, entity)
        return _not_found(request, session)
    except AdapterError as refused:  # e.g. a provider reference that is not a reference
        audit(request, "decide", refused.status_code, session, entity)
        return await _request_page(
            request,
            session,
            task_id,
            status=422,
            error=f"The decision was not recorded: {refused.issues[0].diagnostics}",
        )
    audit(request, "decide", 200, session, entity)
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
    session = await current_session(request)
    if session is None:
        return to_sign_in(request)
    if not ID_PATTERN.match(communication_id):
        return _not_found(request, session)
    async with container_of(request).store.transaction(write=False) as tx:
        found = await tx.resources.read("Communication", communication_id)
    pdf = notice_pdf(found.content) if found else None
    if pdf is None:
        audit(request, "view-notice", 404, session)
        return _not_found(request, session)
    audit(request, "view-notice", 200, session, f"Communication/{communication_id}")
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"content-disposition": f'inline; filename="notice-{communication_id}.pdf"'},
    )


# -- the plan's numbers ------------------------------------------------------------------------


@router.get("/numbers")
async def numbers(request: Request) -> Response:
    session = await current_session(request)
    if session is None:
        return to_sign_in(request)
    now = now_of(request)
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
    container = container_of(request)
    report = await container.metrics.report(Period(start, end))
    workspace = Workspace(container, warning_share=container.settings.deadline_warning_share)
    timeliness = await workspace.timeliness(now)
    audit(request, "view-numbers", 200, session)
    return render_page(
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
