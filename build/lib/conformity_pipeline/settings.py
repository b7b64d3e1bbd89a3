"""All settings, loaded once from environment variables (and an optional `.env` file).

The variable of each setting is its field name in upper case: `DATABASE_URL`,
`KAFKA_BOOTSTRAP_SERVERS`, `CONFORMITY_WEBHOOK_TOKENS` and so on. The README's settings table
lists them all.
"""

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from conformity_pipeline.errors import ConfigError

_BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/=]+")


class Settings(BaseSettings):
    """The typed settings object every command reads; see the README for each variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    conformity_webhook_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    conformity_allow_unsigned: bool = False
    conformity_required_headers: dict[str, SecretStr] = Field(default_factory=dict)

    kafka_checks_topic: str = "conformity.checks"
    kafka_dead_letter_topic: str = "conformity.checks.dlq"
    kafka_topic_partitions: int = Field(default=3, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_idempotent_producer: bool = False
    kafka_publish_timeout_seconds: float = Field(default=10.0, gt=0)
    kafka_consumer_group_prefix: str = "conformity-pipeline"

    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(default=8080, ge=0, le=65535)
    ingest_max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    ingest_retry_after_seconds: int = Field(default=30, ge=1)

    consumer_max_records: int = Field(default=1000, ge=1)
    consumer_batch_timeout_ms: int = Field(default=200, ge=0)
    consumer_retry_backoff_seconds: float = Field(default=2.0, ge=0)

    alert_webhook_url: SecretStr | None = None

    metrics_port: int = Field(default=9100, ge=0, le=65535)
    public_url: str | None = None

    pipeline_data_dir: Path = Path(".conformity-pipeline")
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @field_validator("conformity_webhook_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("conformity_webhook_tokens")
    @classmethod
    def _base64_only(cls, tokens: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for position, token in enumerate(tokens, start=1):
            if not _BASE64_TOKEN.fullmatch(token.get_secret_value()):
                raise ValueError(
                    f"token number {position} holds characters outside the base64 alphabet "
                    "(A-Z, a-z, 0-9, +, /, =); Conformity refuses such tokens, so copy the "
                    "channel's security token again"
                )
        return tokens

    @cached_property
    def token_values(self) -> tuple[str, ...]:
        """The accepted tokens as plain text, for the signature check only."""
        return tuple(token.get_secret_value() for token in self.conformity_webhook_tokens)

    @cached_property
    def sqlalchemy_url(self) -> str:
        """`DATABASE_URL` with the psycopg 3 driver named, as SQLAlchemy wants it."""
        if self.database_url is None:
            raise ConfigError("DATABASE_URL is not set; set it to a postgresql:// URL.")
        return to_psycopg_url(self.database_url)

    def require_signing(self) -> None:
        """Stop start-up of the edge when requests could never be verified."""
        if not self.conformity_webhook_tokens and not self.conformity_allow_unsigned:
            raise ConfigError(
                "CONFORMITY_WEBHOOK_TOKENS is empty; set it to the channel's security token "
                "(comma-separated to accept several), or set CONFORMITY_ALLOW_UNSIGNED=true to "
                "accept unsigned requests on a trusted network."
            )

    def require_kafka(self) -> str:
        """The bootstrap servers, or a ConfigError naming the variable."""
        if not self.kafka_bootstrap_servers:
            raise ConfigError(
                "KAFKA_BOOTSTRAP_SERVERS is not set; set it to host:port[,host:port...]."
            )
        return self.kafka_bootstrap_servers


def to_psycopg_url(url: str) -> str:
    """Rewrite `postgres://` and `postgresql://` URLs to SQLAlchemy's psycopg 3 dialect."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ConfigError("DATABASE_URL must start with postgresql:// (or postgres://).")


def masked_url(url: str) -> str:
    """`url` with any password replaced by ***, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unparsable URL)"


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; a bad value raises ConfigError naming its variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
    except SettingsError as error:
        # Raised for values that must be JSON; its cause may quote the value, so leave it out.
        field = re.search(r'field "(\w+)"', str(error))
        variable = field.group(1).upper() if field else "A setting"
        raise ConfigError(
            f"{variable} is not valid JSON; write a JSON object such as "
            '{"X-Header": "value"} (the README lists every format).'
        ) from None


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        variable = "_".join(str(part) for part in problem["loc"][:1]).upper()
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{variable}: {message}.")
    return " ".join(lines)
