"""The bundled sample files stay the same as the team's shared ones."""

import pytest

from tests.fixtures import BUNDLED, SHARED


@pytest.mark.skipif(not SHARED.is_dir(), reason="no shared/ folder beside this clone")
def test_bundled_fixtures_match_the_shared_ones() -> None:
    shared = {path.name: path.read_bytes() for path in SHARED.iterdir()}
    bundled = {path.name: path.read_bytes() for path in BUNDLED.iterdir()}
    assert bundled == shared
