"""Progress of a long run: each stage (loading, checks, each file written) reported as it
starts and when it ends, with its duration, to whoever passes a callback (the CLI prints them
on stderr)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """A stage starting (`seconds` None) or done (`seconds` it took)."""

    name: str  # what is being done: "loading the database", "writing report.html"
    seconds: float | None = None


Progress = Callable[[Stage], None]


@contextmanager
def stage(progress: Progress | None, name: str) -> Iterator[None]:
    """Report `name` to `progress` (if any) as it starts and once it is done."""
    if progress is None:
        yield
        return
    progress(Stage(name))
    started = time.perf_counter()
    yield
    progress(Stage(name, time.perf_counter() - started))
