"""Where the Conformity sample files live."""

import os
from pathlib import Path

BUNDLED = Path(__file__).resolve().parent / "data" / "conformity"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "conformity"


def fixtures_dir() -> Path:
    """Return the directory holding the Conformity fixtures.

    ``CONFORMITY_FIXTURES`` overrides the default. Otherwise the team's shared copy
    (``shared/fixtures/conformity`` beside this repository) is used when it exists, and the
    copy bundled in ``tests/data/conformity`` when it does not.
    """
    override = os.environ.get("CONFORMITY_FIXTURES")
    if override:
        return Path(override)
    return SHARED if SHARED.is_dir() else BUNDLED
