"""Operator mistakes end in one line that says what to do, never a traceback (issue #17).

Every test runs the real command (`python -m fhir_adapter ...`) as a subprocess in a temporary
folder, with only the FHIR_ADAPTER_* variables it sets, and checks the first line of its error
output and its exit code.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.e2e.test_live_server import free_port

TIMEOUT = 60.0


def run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_ADAPTER_")}
    clean.update({"FHIR_ADAPTER_PORT": str(free_port()), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "fhir_adapter", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one `error:` line; the output holds nothing like a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_an_unknown_database_driver_is_named_with_the_likely_one(tmp_path: Path) -> None:
    result = run(
        tmp_path, "serve", env={"FHIR_ADAPTER_DATABASE_URL": "postgresl+asyncpg://u:s3cret@db/x"}
    )
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith(
        "error: FHIR_ADAPTER_DATABASE_URL names an unknown database driver 'postgresl+asyncpg'"
        " (did you mean postgresql+asyncpg?)"
    ), line
    assert "s3cret" not in result.stderr


def test_with_debug_logging_the_traceback_is_shown(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        "serve",
        env={"FHIR_ADAPTER_DATABASE_URL": "mysq://db/x", "FHIR_ADAPTER_LOG_LEVEL": "DEBUG"},
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "StartupError" in result.stderr


def test_unreachable_postgresql_names_host_port_and_database_never_the_password(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://fhir:s3cret@127.0.0.1:{port}/adapter"
    result = run(tmp_path, "serve", env={"FHIR_ADAPTER_DATABASE_URL": url})
    assert result.returncode == 1
    assert error_line(result).startswith(
        f"error: cannot reach PostgreSQL database 'adapter' at 127.0.0.1:{port} as user 'fhir':"
    )
    assert "start PostgreSQL there or fix FHIR_ADAPTER_DATABASE_URL" in result.stderr
    assert "s3cret" not in result.stderr


@pytest.mark.postgres
def test_a_missing_postgresql_database_says_how_to_create_it(
    tmp_path: Path, postgres_database_url: str
) -> None:
    url = make_url(postgres_database_url).set(database="fhir_adapter_no_such_db")
    result = run(
        tmp_path,
        "db",
        "upgrade",
        env={"FHIR_ADAPTER_DATABASE_URL": url.render_as_string(hide_password=False)},
    )
    assert result.returncode == 1
    where = f"{url.host}:{url.port or 5432}"
    assert error_line(result).startswith(
        f"error: PostgreSQL database 'fhir_adapter_no_such_db' at {where}"
    )
    assert f"does not exist; create it (createdb -h {url.host}" in result.stderr


def test_a_sqlite_file_in_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "fhir.db"
    result = run(
        tmp_path, "db", "upgrade", env={"FHIR_ADAPTER_DATABASE_URL": f"sqlite:///{missing}"}
    )
    assert result.returncode == 1
    assert error_line(result) == (
        f"error: cannot open SQLite file {missing}: its folder must exist and be writable;"
        " fix FHIR_ADAPTER_DATABASE_URL"
    )


def test_a_port_in_use_is_refused_before_the_database_is_touched(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            tmp_path,
            "serve",
            env={"FHIR_ADAPTER_PORT": str(port), "FHIR_ADAPTER_DATABASE_URL": "sqlite:///fhir.db"},
        )
    assert result.returncode == 1
    assert error_line(result) == (
        f"error: port {port} on 127.0.0.1 is already in use (another fhir-adapter?); stop that"
        " process or choose another port with FHIR_ADAPTER_PORT"
    )
    assert not (tmp_path / "fhir.db").exists()  # checked before migrating


def test_a_setting_below_its_minimum(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", env={"FHIR_ADAPTER_AUTH_TOKEN_LIFETIME_SECONDS": "10"})
    assert result.returncode == 1
    assert error_line(result) == (
        "error: invalid setting FHIR_ADAPTER_AUTH_TOKEN_LIFETIME_SECONDS=10: input should be"
        " greater than or equal to 30; fix it in the environment or .env"
    )


def test_a_setting_that_is_not_a_number(tmp_path: Path) -> None:
    result = run(tmp_path, "db", "upgrade", env={"FHIR_ADAPTER_MAX_PAGE_SIZE": "lots"})
    assert result.returncode == 1
    assert error_line(result).startswith(
        "error: invalid setting FHIR_ADAPTER_MAX_PAGE_SIZE=lots: input should be a valid integer"
    )


def test_misspelled_settings_are_warned_about_and_the_first_line_names_the_store(
    tmp_path: Path,
) -> None:
    """From the environment and from .env; the port is taken so serve stops after the checks."""
    (tmp_path / ".env").write_text("FHIR_ADAPTER_DATABSE_URL=sqlite:///other.db\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run(
            tmp_path,
            "serve",
            env={
                "FHIR_ADAPTER_PORT": str(taken.getsockname()[1]),
                "FHIR_ADAPTER_DATABASE_URL": "sqlite:///fhir.db",
                "FHIR_ADAPTER_TOKEN_LIFETIME_SECONDS": "600",
            },
        )
    lines = result.stderr.splitlines()
    assert lines[0].endswith(f"(store: SQLite file {tmp_path.resolve() / 'fhir.db'})"), lines
    assert "INFO fhir_adapter.cli serving FHIR at http://127.0.0.1:" in lines[0]
    warnings = [line.split(" WARNING fhir_adapter.cli ")[1] for line in lines if "WARNING" in line]
    assert warnings == [
        "FHIR_ADAPTER_DATABSE_URL is not a setting and is ignored;"
        " did you mean FHIR_ADAPTER_DATABASE_URL?",
        "FHIR_ADAPTER_TOKEN_LIFETIME_SECONDS is not a setting and is ignored;"
        " did you mean FHIR_ADAPTER_AUTH_TOKEN_LIFETIME_SECONDS?",
    ]
    assert result.returncode == 1


def test_clients_token_names_the_url_it_could_not_reach(tmp_path: Path) -> None:
    keygen = run(tmp_path, "clients", "keygen", "ehr")
    assert keygen.returncode == 0, keygen.stderr
    base = f"http://127.0.0.1:{free_port()}/fhir"  # nothing listens there
    result = run(
        tmp_path, "clients", "token", "--client-id", "x", "--key", "ehr.pem", "--url", base
    )
    assert result.returncode == 1
    assert error_line(result).startswith(
        f"error: cannot reach {base}/.well-known/smart-configuration (ConnectError);"
        " is fhir-adapter serving there?"
    )


def test_demo_names_the_url_it_could_not_reach(tmp_path: Path) -> None:
    keygen = run(tmp_path, "clients", "keygen", "ehr")
    assert keygen.returncode == 0, keygen.stderr
    base = f"http://127.0.0.1:{free_port()}/fhir"  # nothing listens there
    result = run(tmp_path, "demo", "--url", base, "--client-id", "x", "--key", "ehr.pem")
    assert result.returncode == 1
    assert error_line(result).startswith(
        f"error: cannot reach {base}/.well-known/smart-configuration (ConnectError)"
    )
