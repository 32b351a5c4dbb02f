"""What every `/review` page shares: the templates, the session cookie, the staff audit, forms.

The pages themselves are in routes.py (the queue, a request, deciding, notices, numbers) and
sign_in.py (signing in and out).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from fhir_adapter.access.audit import StaffAuditRecord
from fhir_adapter.bootstrap import Container
from fhir_adapter.review.accounts import Session, StaffAccounts

SESSION_COOKIE = "review_session"
SIGN_IN_COOKIE = "review_sign_in_csrf"


@cache
def templates() -> jinja2.Environment:
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


def container_of(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def accounts_of(request: Request) -> StaffAccounts:
    found: StaffAccounts | None = getattr(request.app.state, "staff_accounts", None)
    container = container_of(request)
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


def now_of(request: Request) -> datetime:
    moment: datetime = container_of(request).workflow.clock()
    return moment


def is_secure(request: Request) -> bool:
    return request.url.scheme == "https"


def audit(
    request: Request, action: str, status: int, session: Session | None, entity: str | None = None
) -> None:
    container_of(request).audit.record_staff(
        StaffAuditRecord(
            action=action,
            status=status,
            recorded=now_of(request),
            staff=session.staff.name if session else None,
            role=session.staff.role.value if session else None,
            address=request.client.host if request.client else None,
            entity=entity,
        )
    )


def render_page(
    request: Request,
    template: str,
    *,
    session: Session | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    html = (
        templates()
        .get_template(template)
        .render(
            session=session,
            csrf=session.csrf if session else "",
            plan_name=container_of(request).settings.plan_name,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status)


async def current_session(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await accounts_of(request).session(token, now=now_of(request))


def to_sign_in(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/review/sign-in?next={quote(target, safe='')}", status_code=303)


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded form (the body size limit applies already); the first value of a name."""
    body = (await request.body()).decode("utf-8", errors="replace")
    form: dict[str, str] = {}
    for name, value in parse_qsl(body, keep_blank_values=True):
        form.setdefault(name, value)
    return form


def safe_next(target: str | None) -> str:
    """Only a path of this workspace: never an open redirect to another site."""
    if target and target.startswith("/review") and not target.startswith("//"):
        return target
    return "/review"


def refused_csrf(request: Request, session: Session | None) -> HTMLResponse:
    return render_page(
        request,
        "message.html.j2",
        session=session,
        status=403,
        title="Form refused",
        message="This form did not carry a valid security token (it may have expired or come "
        "from another site). Nothing was changed. Go back, reload the page and try again.",
    )
