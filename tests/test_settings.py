"""Settings load once from the environment and name the variable of every bad value."""

import pytest

from conformity_pipeline.errors import ConfigError
from conformity_pipeline.settings import load_settings, to_psycopg_url


def test_tokens_are_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFORMITY_WEBHOOK_TOKENS", " b2xk , bmV3== ,")
    assert load_settings().token_values == ("b2xk", "bmV3==")


def test_required_headers_that_are_not_json_name_the_variable_not_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONFORMITY_REQUIRED_HEADERS", '{"X-Channel": "s3cret"')
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert str(raised.value).startswith("CONFORMITY_REQUIRED_HEADERS is not valid JSON")
    assert "s3cret" not in str(raised.value)


def test_a_bad_number_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_MAX_BODY_BYTES", "lots")
    with pytest.raises(ConfigError, match=r"^INGEST_MAX_BODY_BYTES: "):
        load_settings()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
        ("postgresql://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
    ],
    ids=["postgres", "postgresql", "already-psycopg"],
)
def test_database_urls_get_the_psycopg_driver(given: str, expected: str) -> None:
    assert to_psycopg_url(given) == expected


def test_other_database_schemes_are_refused() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL must start with postgresql://"):
        to_psycopg_url("mysql://h/d")


def test_missing_database_url_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        _ = load_settings(database_url=None).sqlalchemy_url
