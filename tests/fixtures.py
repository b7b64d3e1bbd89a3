"""Where the shared Conformity sample files live."""

import os
from pathlib import Path


def fixtures_dir() -> Path:
    """Return the directory holding the Conformity fixtures.

    ``CONFORMITY_FIXTURES`` overrides the default, which is ``shared/fixtures/conformity`` two
    levels above this repository's ``tests`` folder. The path is not checked for existence.
    """
    override = os.environ.get("CONFORMITY_FIXTURES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "conformity"
