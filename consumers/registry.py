"""The reactions this product runs. A new reaction is one module plus one line here."""

from collections.abc import Callable

from consumers.archive import Archive
from consumers.runtime import Reaction

REACTIONS: dict[str, Callable[[], Reaction]] = {
    "archive": Archive,
}
