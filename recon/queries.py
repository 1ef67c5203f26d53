"""Named SQL from `sql/queries/*.sql`: blocks headed `-- name: <query>` (the aiosql convention).

The comment lines right after the name say what the query returns; the rest is the statement,
run with bound parameters only. A small loader of our own, not the aiosql package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

QUERIES_DIR = Path(__file__).resolve().parent.parent / "sql" / "queries"
NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>[\w-]+)\s*$")


@dataclass(frozen=True)
class NamedQuery:
    name: str
    doc: str
    sql: str


def parse_queries(text: str) -> dict[str, NamedQuery]:
    """Every named block of one file; text before the first `-- name:` is the file's preamble."""
    queries: dict[str, NamedQuery] = {}
    name: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "-- name: __end__"]:
        match = NAME_LINE.match(line.strip())
        if not match:
            lines.append(line)
            continue
        if name is not None:
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice")
            queries[name] = _block(name, lines)
        name, lines = match["name"], []
    return queries


def load_queries(directory: Path = QUERIES_DIR) -> dict[str, NamedQuery]:
    """All named queries of every `*.sql` file in `directory`."""
    queries: dict[str, NamedQuery] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, query in parse_queries(path.read_text(encoding="utf-8")).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice (again in {path.name})")
            queries[name] = query
    return queries


def _block(name: str, lines: list[str]) -> NamedQuery:
    doc_lines: list[str] = []
    body = list(lines)
    while body and body[0].strip().startswith("--"):
        doc_lines.append(body.pop(0).strip().removeprefix("--").strip())
    sql = "\n".join(body).strip().rstrip(";").strip()
    return NamedQuery(name=name, doc=" ".join(doc_lines), sql=sql)
