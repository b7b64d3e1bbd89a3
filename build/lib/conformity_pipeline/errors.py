"""The product's exceptions: one root, one branch for untrusted input, one for dependencies.

Messages are whole sentences that name the bad field and say how to fix it. They never carry a
token, a signature or a header value an operator configured as secret.
"""


class PipelineError(Exception):
    """Root of every error this product raises on purpose."""


class ConfigError(PipelineError):
    """A setting is missing or invalid; start-up stops with this message."""


class InputError(PipelineError):
    """Untrusted input was refused. The edge answers it with `status` and `reason`.

    `reason` is a short stable word for metrics and logs (``bad-signature``, ``too-large``).
    """

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class DependencyError(PipelineError):
    """A dependency (the Kafka broker, Postgres) could not do what was asked in time."""


class SchemaNotAtHead(DependencyError):
    """The database schema is older (or newer) than the code expects."""
