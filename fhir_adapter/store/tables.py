"""Table definitions: current versions, every past version, and the search index tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    cast,
)
from sqlalchemy.sql.elements import Label

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC instants on both backends (SQLite stores naive UTC text that sorts)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        # asyncpg decodes timestamptz as UTC-aware datetimes whatever the session's time zone:
        # nothing to do, and no call per row (issue #18: a page of 50 made 50 of them).
        if dialect.name == "postgresql" and dialect.driver == "asyncpg":
            return None
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# BIGINT keys on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
PrimaryKey = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    # Insertion order: search pages are cut on it, so paging is stable while resources change.
    Column("pk", PrimaryKey, primary_key=True, autoincrement=True),
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", UtcDateTime, nullable=False),
    Column("content", JSON, nullable=False),
    UniqueConstraint("resource_type", "id", name="uq_resources_type_id"),
    # Issue #13: `_sort` on `_lastUpdated` (ties by id) walks this in order, keys from the
    # index alone (pk rides along on PostgreSQL; SQLite's index entries end in the rowid, pk).
    Index(
        "ix_resources_type_updated_id",
        "resource_type",
        "last_updated",
        "id",
        postgresql_include=["pk"],
    ),
    # Issue #13: a type's keys in page order, read without the rows (index-only type checks).
    Index("ix_resources_type_pk", "resource_type", "pk"),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("resource_pk", PrimaryKey, ForeignKey("resources.pk"), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("last_updated", UtcDateTime, nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", JSON, nullable=False),
)

# The search index: rows derived from each resource's current version, written and replaced only
# by the store, in the transaction that writes the resource, with the `pk` its insert returned
# (resources are never deleted). Their `resource_pk` is resources.pk without a foreign key: the
# key's check and row lock for every index row cost PostgreSQL about half of what storing an
# AuditEvent costs it (migration 0010; docs/performance.md). A store contract test checks that
# every index row belongs to a stored resource.
search_token = Table(
    "search_token",
    metadata,
    Column("resource_pk", PrimaryKey, nullable=False),  # resources.pk; no key: see above
    Column("param", String(64), nullable=False),
    Column("system", Text),
    Column("code", Text, nullable=False),
    Index("ix_search_token_lookup", "param", "code", "system"),
    # Issue #13: one code's resources in page (key) order, merged with ix_resources_type_pk;
    # on PostgreSQL the system rides along, so `system|code` is matched in the index too.
    Index("ix_search_token_code_pk", "param", "code", "resource_pk", postgresql_include=["system"]),
    Index("ix_search_token_resource", "resource_pk"),
)

search_reference = Table(
    "search_reference",
    metadata,
    Column("resource_pk", PrimaryKey, nullable=False),  # resources.pk; no key: see above
    Column("param", String(64), nullable=False),
    Column("target_type", String(64)),
    Column("target_id", String(64)),
    Column("url", Text),  # absolute references to other servers, matched verbatim
    Index("ix_search_reference_lookup", "param", "target_id", "target_type"),
    Index("ix_search_reference_url", "param", "url"),
    Index("ix_search_reference_resource", "resource_pk"),
)

search_date = Table(
    "search_date",
    metadata,
    Column("resource_pk", PrimaryKey, nullable=False),  # resources.pk; no key: see above
    Column("param", String(64), nullable=False),
    Column("low", UtcDateTime, nullable=False),
    Column("high", UtcDateTime, nullable=False),
    Index("ix_search_date_lookup", "param", "low", "high"),
    Index("ix_search_date_resource", "resource_pk"),
)

search_string = Table(
    "search_string",
    metadata,
    Column("resource_pk", PrimaryKey, nullable=False),  # resources.pk; no key: see above
    Column("param", String(64), nullable=False),
    Column("value", Text, nullable=False),
    Index("ix_search_string_lookup", "param", "value"),
    Index("ix_search_string_resource", "resource_pk"),
)

# Background work of the second-opinion workflow, claimed through the database so that several
# processes can share it: one row per request Task.
workflow_jobs = Table(
    "workflow_jobs",
    metadata,
    Column("task_id", String(64), primary_key=True),
    Column("state", String(16), nullable=False),  # evaluate | review | done
    Column("due_at", UtcDateTime, nullable=False),  # the decision deadline
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("leased_until", UtcDateTime),  # a worker holds it until then
    Index("ix_workflow_jobs_next", "state", "next_attempt_at"),
    Index("ix_workflow_jobs_due", "state", "due_at"),
)

# The transactional outbox: a delivery owed, written in the same transaction as what it delivers.
outbox = Table(
    "outbox",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("communication_id", String(64), nullable=False),
    Column("destination", String(32), nullable=False),  # provider-endpoint, …, render
    Column("state", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("leased_until", UtcDateTime),
    Column("delivered_at", UtcDateTime),
    Column("last_error", String(200)),  # a short code such as "HTTP 503"; never content
    Column("subscription_id", String(64)),  # for notifications: which Subscription, which event
    Column("event_number", Integer),
    Column("payload", JSON),  # a render job: the letter as decided, and where it then goes
    Index("ix_outbox_next", "state", "next_attempt_at"),
)

# Every event a Subscription was sent, numbered from 1 without gaps (for $status and $events).
subscription_events = Table(
    "subscription_events",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("event_number", Integer, primary_key=True),
    Column("focus", String(140), nullable=False),  # Type/id of what changed
    Column("occurred_at", UtcDateTime, nullable=False),
)

# The built-in authorization server (security/issuer.py): its signing keys, the registered
# clients, and the client-assertion ids already used (replay protection across processes).
auth_keys = Table(
    "auth_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("private_pem", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

auth_clients = Table(
    "auth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("jwks", JSON, nullable=False),
    Column("scope", Text, nullable=False),
    Column("patient", String(64)),  # tokens for this client carry this `patient` claim
    Column("created_at", UtcDateTime, nullable=False),
)

auth_used_assertions = Table(
    "auth_used_assertions",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)

# The review workspace (fhir_adapter/review/): staff accounts and their signed-in sessions.
staff_accounts = Table(
    "staff_accounts",
    metadata,
    Column("staff_id", String(36), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # reviewer | auditor
    Column("credentials", String(200), nullable=False),  # e.g. "MD, Internal Medicine"
    Column("npi", String(10)),
    Column("specialty", String(20)),  # NUCC taxonomy code
    Column("practitioner", String(400)),  # the reviewer's Practitioner reference
    Column("password_hash", Text, nullable=False),  # argon2id
    Column("disabled", Boolean, nullable=False),
    Column("failed_sign_ins", Integer, nullable=False),
    Column("locked_until", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
)

staff_sessions = Table(
    "staff_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the cookie's token
    Column("staff_id", String(36), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)


def stored_json(content: Column[Any]) -> Label[str]:
    """A content column read as the JSON text it was stored as, labelled `json` (issue #18:
    the driver decoding every resource a search page only passes on cost a fifth of the page;
    StoredResource decodes it when asked)."""
    return cast(content, Text).label("json")


INDEX_TABLES = (search_token, search_reference, search_date, search_string)
ALL_TABLES = (
    resources,
    resource_versions,
    *INDEX_TABLES,
    workflow_jobs,
    outbox,
    subscription_events,
    auth_keys,
    auth_clients,
    auth_used_assertions,
    staff_accounts,
    staff_sessions,
)
