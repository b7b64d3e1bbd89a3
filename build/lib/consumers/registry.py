"""The reactions this product runs. A new reaction is one module plus one line here."""

from collections.abc import Callable

from conformity_pipeline.settings import Settings
from consumers.alerts import Alerts
from consumers.archive import Archive
from consumers.history import CheckHistory
from consumers.runtime import Reaction

REACTIONS: dict[str, Callable[[], Reaction]] = {
    "alerts": Alerts,
    "archive": Archive,
    "checks": CheckHistory,
}


def default_reactions(settings: Settings) -> list[str]:
    """The consumers `up` and a bare `consume` run: every one whose settings are present."""
    names = sorted(REACTIONS)
    if settings.alert_webhook_url is None:
        names.remove("alerts")
    return names
