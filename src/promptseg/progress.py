"""Progress for long work: one helper for every bar and spinner (rich), quiet when piped or asked."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def shown(quiet: bool) -> bool:
    """Whether progress is drawn: on a terminal, unless quiet."""
    return not quiet and sys.stderr.isatty()


@contextmanager
def progress(total: int, label: str, quiet: bool = False, *, start: int = 0, unit: str = "items",
             info: str | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr while the block runs. Yields `advance(n=1, *, completed=None,
    info=None)`: moves the bar by n (or to `completed`) and sets the text after it. `unit`
    "bytes" shows a transfer (sizes and speed); `info` a text column (e.g. counts or a loss).
    Draws nothing when quiet or piped; the function still works."""
    if not shown(quiet):
        yield lambda n=1, *, completed=None, info=None: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    if unit == "bytes":
        columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()]
    else:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn()]
    if info is not None:
        columns.append(TextColumn("{task.fields[info]}"))
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=total, completed=start, info=info or "")

        def advance(n: int = 1, *, completed: int | None = None, info: str | None = None) -> None:
            fields = {} if info is None else {"info": info}
            if completed is not None:
                bar.update(task, completed=completed, **fields)
            else:
                bar.update(task, advance=n, **fields)

        yield advance


@contextmanager
def status(message: str, quiet: bool = False) -> Iterator[None]:
    """A spinner with `message` on stderr while the block runs; nothing when quiet or piped."""
    if not shown(quiet):
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(message):
        yield
