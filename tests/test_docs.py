"""Every SQL example in the README and docs/ runs against the schema at head."""

import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def sql_examples() -> list[tuple[str, str]]:
    """(document:line, statement) for each statement in a ```sql block."""
    examples = []
    for document in DOCUMENTS:
        source = document.read_text()
        for block in re.finditer(r"```sql\n(.*?)```", source, flags=re.S):
            line = source[: block.start()].count("\n") + 1
            for statement in block.group(1).split(";"):
                code = "\n".join(
                    part for part in statement.splitlines() if not part.strip().startswith("--")
                )
                if code.strip():
                    examples.append((f"{document.name}:{line}", code))
    return examples


EXAMPLES = sql_examples()


@pytest.mark.parametrize(("where", "statement"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_sql_example_runs(database_url: str, where: str, statement: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


def test_the_examples_were_found() -> None:
    assert len(EXAMPLES) >= 12
