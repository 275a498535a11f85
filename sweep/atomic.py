"""Files written whole or not at all: a temporary file beside the target, then a rename. A reader, a parallel trial
or a writer killed half-way never leaves (or sees) half a file."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path):
    """Yield a temporary path to write to; it becomes `path` when the block ends without an error."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def create_text(path: Path, text: str) -> bool:
    """Write `path` only if it does not exist yet, whole, in one step; False when it already existed.
    Of two processes racing to create it, exactly one wins, and the other reads a complete file."""
    tmp = path.with_name(f".{path.stem}.new{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        tmp.write_text(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)
