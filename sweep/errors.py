"""The one error type for mistakes a user can fix. Entry points (the command lines, and the plugin classes Hydra
calls) turn it into one `error: ...` line and exit code 2, the code argparse uses for bad arguments."""

from __future__ import annotations

import atexit
import signal
import sys
import threading
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
        # The user's next Ctrl-C must not turn the exit into a traceback, but a host process (a notebook) that
        # catches the SystemExit keeps its own Ctrl-C: it is ignored only once the interpreter is really exiting.
        atexit.register(_ignore_ctrl_c)
        exit_with(str(e), EXIT_INTERRUPTED)
    except UserError as e:
        exit_with(str(e))


def _ignore_ctrl_c() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def hydra_error(e: BaseException) -> str | None:
    """One line for what Hydra or OmegaConf refused while composing a config (an unknown group option or key, an
    override it cannot read, an interpolation that does not resolve), secrets masked; None for anything else."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    from sweep.redact import redact

    if isinstance(e, MissingConfigException) and e.missing_cfg_file and "/" in e.missing_cfg_file:
        group, choice = e.missing_cfg_file.rsplit("/", 1)
        options = ", ".join(e.options) if e.options else "none"
        return f"{group}={choice} is not an option; {group} has: {options}"
    if isinstance(e, OverrideParseException):
        lines = str(e).strip().splitlines()
        why = lines[1] if len(lines) > 1 and not lines[1].startswith("See ") else "it does not parse"
        return (f"cannot read the override {redact(str(e.override))!r} ({why}); quote a value that holds spaces, "
                "quotes or other special characters: key='my value' (inside the quotes, \\' is a quote)")
    if isinstance(e, ConfigCompositionException):
        cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else None
        text = redact(str(e).strip().splitlines()[0])
        if cause is not None:
            text += f" ({redact(str(cause).strip().splitlines()[0])})"
        return text + ("; +key=value adds a key the config does not have" if "not in struct" in str(e) + str(cause) else "")
    if isinstance(e, OmegaConfBaseException):
        key = getattr(e, "full_key", None)
        return f"{key + ': ' if key else ''}{redact(str(e).strip().splitlines()[0])}"
    return None
