"""`/review/sign-in` and `/review/sign-out`: a staff member's session (accounts.py), with a
CSRF token of its own on the sign-in form."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from fhir_adapter.review.accounts import SignInRefusedError, same_token
from fhir_adapter.review.pages import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    accounts_of,
    audit,
    current_session,
    is_secure,
    now_of,
    read_form,
    refused_csrf,
    render_page,
    safe_next,
    to_sign_in,
)

router = APIRouter(include_in_schema=False)


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    token = secrets.token_urlsafe(32)
    response = render_page(
        request,
        "sign_in.html.j2",
        session=None,
        sign_in_csrf=token,
        next=safe_next(request.query_params.get("next")),
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
        secure=is_secure(request),
        samesite="strict",
        max_age=3600,
    )


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await read_form(request)
    target = safe_next(form.get("next"))
    if not same_token(form.get("csrf"), request.cookies.get(SIGN_IN_COOKIE)):
        audit(request, "sign-in", 403, None)
        return refused_csrf(request, None)
    try:
        session, token = await accounts_of(request).sign_in(
            form.get("name", ""), form.get("password", ""), now=now_of(request)
        )
    except SignInRefusedError as refused:
        audit(request, "sign-in", 401, None)
        fresh = secrets.token_urlsafe(32)
        page = render_page(
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
    audit(request, "sign-in", 200, session)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path="/review",
        httponly=True,
        secure=is_secure(request),
        samesite="lax",
        max_age=int((session.expires_at - now_of(request)).total_seconds()),
    )
    response.delete_cookie(SIGN_IN_COOKIE, path="/review/sign-in")
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    session = await current_session(request)
    form = await read_form(request)
    if session is None:
        return to_sign_in(request)
    if not same_token(form.get("csrf"), session.csrf):
        audit(request, "sign-out", 403, session)
        return refused_csrf(request, session)
    await accounts_of(request).sign_out(request.cookies.get(SESSION_COOKIE, ""))
    audit(request, "sign-out", 200, session)
    response = RedirectResponse("/review/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/review")
    return response
