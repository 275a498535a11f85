"""The one error type for mistakes a user can fix. Entry points turn it into `error: ...` and an exit code."""


class UserError(Exception):
    """A bad setting, file or path, named in one line; never shown as a traceback."""


def first_line(e: BaseException) -> str:
    """`Type: first line of the message`, for one-line reports of someone else's exception."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
