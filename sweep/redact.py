"""Secrets never reach a file or a log: whatever looks like a password in a URL or a secret query value is masked.
Storage URLs, Ray addresses, tracking URIs and error lines all go through here."""

from __future__ import annotations

import re

SECRET_KEYS = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)  # query keys whose values are never shown
MASK = "***"


def redact(text: str) -> str:
    """`text` with whatever looks like a URL's password or a secret query value replaced by ***: for text that did
    not parse, or came from elsewhere. Everything between :// and the netloc's last @ is masked, so a password
    holding @, / or : leaves nothing of itself."""
    text = re.sub(r"(://[^/\s:@]*:)[^\s]*@(?=[^@\s]*$|[^@\s/]*[/?\s])", rf"\1{MASK}@", text)
    text = re.sub(r"(://[^/\s:@]*:)[^\s]*@", rf"\1{MASK}@", text)
    return re.sub(r"([?&;][^=&\s]*(?:pass|pwd|secret|token|key)[^=&\s]*=)[^&#\s'\"]*", rf"\1{MASK}", text,
                  flags=re.IGNORECASE)


ENV_REF = re.compile(r"\$\{oc\.env:[A-Za-z_][A-Za-z0-9_]*\}")


def literal_password(address: str) -> bool:
    """Whether an address (scheme://user:password@host...) as the user wrote it holds a password that is not exactly
    one ${oc.env:VAR} reference: Hydra saves settings into every run's hydra.yaml as written."""
    netloc = address.split("://", 1)[1] if "://" in address else ""
    userinfo = netloc.rpartition("@")[0] if "@" in netloc else ""
    if ":" not in userinfo:
        return False
    return not ENV_REF.fullmatch(userinfo.split(":", 1)[1])
