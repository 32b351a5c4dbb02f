"""Settings read from FHIR_ADAPTER_* environment variables (contract §1); never built at import time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split(separator: str, normalize: Callable[[str], str] = str.strip) -> BeforeValidator:
    """A list setting written as one string (`a, b`): split at `separator`, each item
    normalized, blanks left out; a list or set given in code is taken as it is."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return [normalize(item) for item in value.split(separator) if item.strip()]

    return BeforeValidator(parse)


def _host(item: str) -> str:
    """`host` or `host:port`, lower case, an IPv6 literal without its brackets."""
    return item.strip().lower().strip("[]")


# Comma-separated names or codes, as a set; `;`-separated printable lines, in order.
Names = Annotated[frozenset[str], NoDecode, _split(",")]
HostNames = Annotated[frozenset[str], NoDecode, _split(",", _host)]
Origins = Annotated[tuple[str, ...], NoDecode, _split(",")]
Lines = Annotated[tuple[str, ...], NoDecode, _split(";")]


class Settings(BaseSettings):
    """Everything an operator can set. Construct it in the CLI or the composition root."""

    model_config = SettingsConfigDict(
        env_prefix="FHIR_ADAPTER_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    base_url: str | None = None
    database_url: str = "sqlite+aiosqlite:///fhir-adapter.db"
    directory_url: str | None = None
    network: str = "Organization/medi-cal-network"
    plan_organization: str = "Organization/demo-plan"

    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # Issue #16: what an unauthenticated or slow client can make the server hold.
    max_header_bytes: int = Field(default=16 * 1024, ge=4096)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    max_concurrent_bodies: int = Field(default=64, ge=1)
    max_json_depth: int = Field(default=100, ge=8, le=1000)
    max_bundle_entries: int = Field(default=1000, ge=1)
    default_page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=500, ge=1)
    log_level: str = "INFO"
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="comma-separated proxy addresses whose X-Forwarded-For/-Proto are trusted",
    )

    directory_timeout_seconds: float = Field(default=5.0, gt=0)
    directory_attempts: int = Field(default=3, ge=1, le=10)
    directory_cache_seconds: float = Field(default=60.0, ge=0)
    primary_care_taxonomy: Names = Field(
        default=frozenset(),
        description="comma-separated NUCC codes treated as primary care (empty: built-in list)",
    )
    holiday_ignore: Names = Field(
        default=frozenset(), description="comma-separated holiday names not counted as closed days"
    )
    member_notice_url: str | None = None
    plan_name: str = "Demo Medi-Cal Health Plan"
    plan_phone: str = "1-800-555-0100"
    plan_tty: str = "711"
    plan_address: Lines = Field(
        default=("100 Main Street", "Los Angeles, CA 90012"), description="lines separated by ';'"
    )
    plan_website: str = "https://demo-plan.example.org"
    plan_hours: str = "Monday to Friday, 8 a.m. to 6 p.m."
    plan_hours_es: str | None = "lunes a viernes, de 8 a. m. a 6 p. m."  # plan_hours in Spanish
    # Issue #11: the contacts every denial notice prints, set to what the plan's DHCS-approved
    # template says. The defaults' sources are in fhir_adapter/notices/contacts.py (not imported
    # here, to keep the CLI's start light; tests/unit/notices/test_catalog.py keeps them equal).
    notice_hearing_phone: str = "1-800-743-8525"
    notice_hearing_tdd: str = "1-800-952-8349"
    notice_hearing_address: Lines = Field(
        default=(
            "California Department of Social Services",
            "State Hearings Division",
            "P.O. Box 944243, Mail Station 9-17-37",
            "Sacramento, CA 94244-2430",
        ),
        description="lines separated by ';'",
    )
    notice_hearing_online: str = "https://www.cdss.ca.gov/hearing-requests"
    notice_hearing_fax: str = "916-651-5210 or 916-651-2789"
    notice_legal_help_phone: str = "1-800-952-5253"
    notice_legal_help_tdd: str = "1-800-952-8349"
    notice_dmhc_phone: str = "1-888-466-2219"
    notice_dmhc_tdd: str = "1-877-688-9891"
    notice_dmhc_website: str = "www.dmhc.ca.gov"
    notice_ombudsman_phone: str = "1-888-452-8609"
    notice_dhcs_civil_rights_phone: str = "916-440-7370"
    notice_hhs_civil_rights_phone: str = "1-800-368-1019"
    notice_hhs_civil_rights_tdd: str = "1-800-537-7697"
    notice_taglines_file: Path | None = Field(
        default=None,
        description="JSON object of language code to tagline ({phone}, {tty}), over the built-in",
    )
    delivery_max_attempts: int = Field(default=8, ge=1)
    delivery_backoff_base_seconds: float = Field(default=10.0, gt=0)
    delivery_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    delivery_timeout_seconds: float = Field(default=10.0, gt=0)
    answer_within_seconds: float = Field(
        default=10.0,
        gt=0,
        description="how long a submission waits for its decision before the worker takes over",
    )
    worker_enabled: bool = True
    worker_lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="how long a claimed job stays a worker's before others may take it",
    )
    worker_interval_seconds: float = Field(default=2.0, gt=0)
    retry_base_seconds: float = Field(default=30.0, gt=0)
    candidates_offered: int = Field(
        default=5, ge=1, le=50, description="providers a decision offers the member, best first"
    )
    deadline_warning_share: float = Field(
        default=0.75,
        gt=0,
        lt=1,
        description="a pended request past this share of its decision window is flagged",
    )

    # Security (issue #5). Without an external issuer the built-in SMART Backend Services
    # authorization server issues the tokens (`fhir-adapter clients add`).
    auth_issuer: str | None = Field(
        default=None, description="external OAuth issuer whose JWT access tokens are accepted"
    )
    auth_jwks_url: str | None = None
    auth_jwks_file: Path | None = None
    auth_audience: str | None = Field(default=None, description="default: the FHIR base URL")
    auth_token_endpoint: str | None = Field(
        default=None, description="the external issuer's token endpoint, for smart-configuration"
    )
    auth_leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    auth_token_lifetime_seconds: int = Field(default=300, ge=30, le=3600)
    auth_jwks_refresh_seconds: float = Field(default=60.0, ge=0)
    auth_client_check_seconds: float = Field(
        default=30.0,
        ge=0,
        le=30,  # issue #18: revocation's stated bound is at most 30 s
        description="how long a client's registration is trusted before it is looked up again "
        "(`clients remove` takes effect within this time)",
    )
    rate_limit: str = Field(
        default="3000/minute", description="per client, `limits` notation; `off`: no limit"
    )
    cors_origins: Origins = Field(default=(), description="comma-separated; empty: CORS off")
    audit_flush_seconds: float = Field(default=0.5, gt=0, le=60)
    audit_writer_process: bool = Field(
        default=True,
        description="on PostgreSQL, store the AuditEvents from a process of their own, off the "
        "answering process's core (SQLite stores them in the serving process)",
    )
    audit_spool_dir: Path | None = Field(
        default=None,
        description="where AuditEvents wait, on local disk, until they are stored "
        "(docs/durability.md); default: next to the SQLite file, else a temp directory",
    )
    demo: bool = Field(
        default=False,
        description="serve the demo EHR inboxes at /ehr (loopback only, in memory); "
        "`fhir-adapter demo` sets it for its own server; never in production",
    )
    subscription_allowed_hosts: HostNames = Field(
        default=frozenset(),
        description="comma-separated host or host:port that rest-hook Subscriptions may reach "
        "over plain http or at a non-public address (issue #16); empty: https to public hosts only",
    )

    # Operating it (issue #13, docs/observability.md).
    workers: int = Field(
        default=1, ge=1, le=64, description="server processes (PostgreSQL only when over 1)"
    )
    shutdown_timeout_seconds: int = Field(
        default=30, ge=1, description="how long a stopping server lets requests in flight finish"
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="`json`: one JSON object per line"
    )
    metrics_enabled: bool = Field(default=True, description="serve Prometheus metrics at /metrics")
    metrics_allow: str = Field(
        default="127.0.0.1,::1",
        description="comma-separated addresses or networks that may read /metrics; `*`: anyone",
    )
    metrics_cache_seconds: float = Field(
        default=5.0, ge=0, le=300, description="how long queue figures are reused between scrapes"
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db shared by every process for rate limits; unset: "
        "each process counts on its own",
    )

    # The review workspace at /review (issue #15).
    review_max_failures: int = Field(default=5, ge=1, description="wrong passwords before lock-out")
    review_lockout_seconds: float = Field(default=900.0, gt=0)
    review_session_seconds: float = Field(default=8 * 3600.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _use_async_driver(cls, url: str) -> str:
        """Accept the plain SQLAlchemy URLs operators know and pick the async driver for them."""
        for plain, async_ in (
            ("sqlite://", "sqlite+aiosqlite://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
        ):
            if url.startswith(plain):
                return async_ + url[len(plain) :]
        return url

    @property
    def built_in_directory_url(self) -> str:
        """Where this process serves the demo directory (contract §1)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/directory/fhir"

    @property
    def effective_directory_url(self) -> str:
        return (self.directory_url or self.built_in_directory_url).rstrip("/")

    @property
    def public_origin(self) -> str:
        """scheme://host[:port] of the public FHIR base: where /auth lives."""
        parts = urlsplit(self.fhir_base_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def token_audience(self) -> str:
        return (self.auth_audience or self.fhir_base_url).rstrip("/")

    @property
    def fhir_base_url(self) -> str:
        """The public FHIR base used in Location headers and Bundle links."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.host}:{self.port}/fhir"
