"""Settings parse their own list values: comma- or `;`-separated strings from the environment."""

from __future__ import annotations

import pytest

from fhir_adapter.config import Settings


def test_list_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_ADAPTER_PRIMARY_CARE_TAXONOMY", "207Q00000X, 208D00000X,,")
    monkeypatch.setenv("FHIR_ADAPTER_HOLIDAY_IGNORE", "Cesar Chavez Day")
    monkeypatch.setenv("FHIR_ADAPTER_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("FHIR_ADAPTER_SUBSCRIPTION_ALLOWED_HOSTS", "Payer.Test:8443, [::1]")
    monkeypatch.setenv("FHIR_ADAPTER_PLAN_ADDRESS", "PO Box 1; ; Fresno, CA 93701")
    settings = Settings(_env_file=None)
    assert settings.primary_care_taxonomy == frozenset({"207Q00000X", "208D00000X"})
    assert settings.holiday_ignore == frozenset({"Cesar Chavez Day"})
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.subscription_allowed_hosts == frozenset({"payer.test:8443", "::1"})
    assert settings.plan_address == ("PO Box 1", "Fresno, CA 93701")


def test_list_settings_default_empty_and_take_lists_given_in_code() -> None:
    settings = Settings(_env_file=None)
    assert settings.cors_origins == ()
    assert settings.primary_care_taxonomy == frozenset()
    assert settings.plan_address == ("100 Main Street", "Los Angeles, CA 90012")
    given = Settings(_env_file=None, cors_origins=["https://a.example"])
    assert given.cors_origins == ("https://a.example",)
    assert Settings(_env_file=None, cors_origins="").cors_origins == ()
