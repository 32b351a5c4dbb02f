"""Staff accounts and their sessions (SQL), with argon2id password hashes and lock-out.

Sessions are server-side rows: the cookie carries a random token, the table only its SHA-256, so
a copy of the database signs nobody in; signing out or disabling an account ends them at once.
Each session row holds its own CSRF token, which every form of the workspace carries.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_adapter.store.tables import staff_accounts, staff_sessions


class Role(StrEnum):
    REVIEWER = "reviewer"  # reads the queue and decides
    AUDITOR = "auditor"  # reads everything, decides nothing


@dataclass(frozen=True, slots=True)
class StaffAccount:
    staff_id: str
    name: str
    role: Role
    credentials: str
    npi: str | None
    specialty: str | None
    practitioner: str | None
    disabled: bool
    locked_until: datetime | None

    @property
    def can_decide(self) -> bool:
        return self.role is Role.REVIEWER and not self.disabled

    @property
    def signature(self) -> str:
        """What goes on a decision: the reviewer's name and credentials."""
        return f"{self.name}, {self.credentials}" if self.credentials else self.name


@dataclass(frozen=True, slots=True)
class Session:
    staff: StaffAccount
    csrf: str
    expires_at: datetime


class SignInRefusedError(Exception):
    """Wrong name or password, a disabled account, or one locked after repeated failures; the
    message never says which, so the form cannot be used to find names."""

    def __init__(self, *, locked: bool = False) -> None:
        super().__init__("sign-in refused")
        self.locked = locked


_HASHER = PasswordHasher()  # argon2id with the library's current parameters
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _account(row: RowMapping) -> StaffAccount:
    return StaffAccount(
        staff_id=row["staff_id"],
        name=row["name"],
        role=Role(row["role"]),
        credentials=row["credentials"],
        npi=row["npi"],
        specialty=row["specialty"],
        practitioner=row["practitioner"],
        disabled=row["disabled"],
        locked_until=row["locked_until"],
    )


class StaffAccounts:
    """The `staff_accounts` and `staff_sessions` tables."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_failures: int = 5,
        lockout_seconds: float = 900.0,
        session_seconds: float = 8 * 3600.0,
    ) -> None:
        self.engine = engine
        self.max_failures = max_failures
        self.lockout = timedelta(seconds=lockout_seconds)
        self.session_length = timedelta(seconds=session_seconds)

    async def add(
        self,
        name: str,
        password: str,
        *,
        role: Role,
        credentials: str,
        now: datetime,
        npi: str | None = None,
        specialty: str | None = None,
        practitioner: str | None = None,
    ) -> StaffAccount:
        staff_id = str(uuid.uuid4())
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(staff_accounts).values(
                    staff_id=staff_id,
                    name=name,
                    role=role.value,
                    credentials=credentials,
                    npi=npi,
                    specialty=specialty,
                    practitioner=practitioner,
                    password_hash=_HASHER.hash(password),
                    disabled=False,
                    failed_sign_ins=0,
                    locked_until=None,
                    created_at=now,
                )
            )
        found = await self.by_name(name)
        assert found is not None
        return found

    async def by_name(self, name: str) -> StaffAccount | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(staff_accounts).where(staff_accounts.c.name == name)))
                .mappings()
                .first()
            )
        return _account(row) if row else None

    async def list(self) -> list[StaffAccount]:
        async with self.engine.connect() as conn:
            rows = (
                (await conn.execute(select(staff_accounts).order_by(staff_accounts.c.name)))
                .mappings()
                .all()
            )
        return [_account(r) for r in rows]

    async def disable(self, name: str) -> bool:
        """Disable the account and end its sessions; False when there is no such account."""
        async with self.engine.begin() as conn:
            row = (
                (await conn.execute(select(staff_accounts).where(staff_accounts.c.name == name)))
                .mappings()
                .first()
            )
            if row is None:
                return False
            await conn.execute(
                update(staff_accounts)
                .where(staff_accounts.c.staff_id == row["staff_id"])
                .values(disabled=True)
            )
            await conn.execute(
                delete(staff_sessions).where(staff_sessions.c.staff_id == row["staff_id"])
            )
        return True

    async def sign_in(self, name: str, password: str, *, now: datetime) -> tuple[Session, str]:
        """A new session and its cookie token; SignInRefusedError otherwise. `max_failures` wrong
        passwords in a row lock the account for `lockout` (a right password then fails too)."""
        refused: SignInRefusedError | None = None
        async with self.engine.begin() as conn:  # a refusal's count commits, then it is raised
            row = (
                (
                    await conn.execute(
                        select(staff_accounts)
                        .where(staff_accounts.c.name == name)
                        .with_for_update()
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                _verify(_DUMMY_HASH, password)  # the same work as for a real name
                refused = SignInRefusedError()
            elif row["locked_until"] is not None and row["locked_until"] > now:
                refused = SignInRefusedError(locked=True)
            elif not _verify(row["password_hash"], password) or row["disabled"]:
                failures = row["failed_sign_ins"] + 1
                locked = failures >= self.max_failures
                await conn.execute(
                    update(staff_accounts)
                    .where(staff_accounts.c.staff_id == row["staff_id"])
                    .values(
                        failed_sign_ins=0 if locked else failures,
                        locked_until=now + self.lockout if locked else None,
                    )
                )
                refused = SignInRefusedError(locked=locked)
            else:
                await conn.execute(
                    update(staff_accounts)
                    .where(staff_accounts.c.staff_id == row["staff_id"])
                    .values(failed_sign_ins=0, locked_until=None)
                )
                token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
                expires = now + self.session_length
                await conn.execute(delete(staff_sessions).where(staff_sessions.c.expires_at <= now))
                await conn.execute(
                    insert(staff_sessions).values(
                        token_hash=_token_hash(token),
                        staff_id=row["staff_id"],
                        csrf=csrf,
                        created_at=now,
                        expires_at=expires,
                    )
                )
        if refused is not None or row is None:
            raise refused or SignInRefusedError()
        return Session(_account(row), csrf, expires), token

    async def session(self, token: str, *, now: datetime) -> Session | None:
        """The live session of a cookie token, or None (unknown, expired, account disabled)."""
        query = (
            select(staff_sessions.c.csrf, staff_sessions.c.expires_at, staff_accounts)
            .join(staff_accounts, staff_accounts.c.staff_id == staff_sessions.c.staff_id)
            .where(staff_sessions.c.token_hash == _token_hash(token))
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None or row["expires_at"] <= now or row["disabled"]:
            return None
        return Session(_account(row), row["csrf"], row["expires_at"])

    async def sign_out(self, token: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(staff_sessions).where(staff_sessions.c.token_hash == _token_hash(token))
            )


def _verify(hashed: str, password: str) -> bool:
    try:
        return _HASHER.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens; False when either is missing."""
    return bool(a and b) and hmac.compare_digest(str(a), str(b))
