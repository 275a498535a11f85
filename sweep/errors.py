"""The one error type for mistakes a user can fix. Entry points (the command lines, and the plugin classes Hydra
calls) turn it into one `error: ...` line and exit code 2, the code argparse uses for bad arguments."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn, TypeVar

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
MAX_LINE = 500  # an error line names the setting; it never dumps a huge value
T = TypeVar("T")


class UserError(Exception):
    """A bad setting, file or path, named in one line; never shown as a traceback."""


class Interrupted(UserError):
    """Ctrl-C or SIGTERM: what was done is kept; exit code 130."""


def first_line(e: BaseException) -> str:
    """`Type: first line of the message`, for one-line reports of someone else's exception."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def shorten(text: str, limit: int = MAX_LINE) -> str:
    return text if len(text) <= limit else f"{text[:limit - 40]} ... ({len(text)} characters)"


def exit_with(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    sys.stdout.flush()
    print(f"error: {shorten(message)}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def one_line(call: Callable[[], T]) -> T:
    """Run an entry point's work: a UserError becomes one `error:` line and exit code 2."""
    try:
        return call()
    except Interrupted as e:
        exit_with(str(e), EXIT_INTERRUPTED)
    except UserError as e:
        exit_with(str(e))
