"""The one way settings are checked, for the sweeper, the launchers and the MLP harness alike: a rule says what is
allowed, in words and as a test, and a value that breaks it is one UserError naming the setting.

    check("hydra.sweeper.n_trials", 0, integer(low=1))
    -> hydra.sweeper.n_trials=0 is invalid: expected an integer >= 1

A dataclass of settings carries its rules in its fields' metadata (`setting(default, rule)`); `validate` checks a
mapping against it: unknown keys first, then each rule.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from sweep.errors import UserError, shorten
from sweep.redact import redact


@dataclass(frozen=True)
class Rule:
    allowed: str  # "an integer >= 1": what the error line says is expected
    test: Callable[[Any], bool]

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bounds(low, high, above) -> tuple[str, Callable[[Any], bool]]:
    words = [f">= {low}" if low is not None else "", f"> {above}" if above is not None else "",
             f"<= {high}" if high is not None else ""]
    within = lambda v: ((low is None or v >= low) and (above is None or v > above)  # noqa: E731
                        and (high is None or v <= high))
    return " and ".join(w for w in words if w), within


def integer(low: int | None = None, high: int | None = None, above: int | None = None) -> Rule:
    words, within = _bounds(low, high, above)
    return Rule(f"an integer {words}".rstrip(), lambda v: _is_int(v) and within(v))


def number(low: float | None = None, high: float | None = None, above: float | None = None) -> Rule:
    """A finite number (int or float, never a bool) within the bounds."""
    words, within = _bounds(low, high, above)
    return Rule(f"a number {words}".rstrip(), lambda v: _is_number(v) and within(v))


def seconds() -> Rule:
    return Rule("seconds > 0", lambda v: _is_number(v) and v > 0)


def one_of(*options: Any) -> Rule:
    return Rule(f"one of {', '.join(map(str, options))}", lambda v: v in options and not isinstance(v, bool))


def flag() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def text() -> Rule:
    return Rule("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")


def mapping() -> Rule:
    return Rule("a mapping of key: value", lambda v: hasattr(v, "keys") and not isinstance(v, (str, bytes)))


def strings() -> Rule:
    return Rule("a list of strings", lambda v: listish(v) and all(isinstance(x, str) for x in v))


def optional(rule: Rule, means: str = "") -> Rule:
    return Rule(f"null{' (' + means + ')' if means else ''} or {rule.allowed}", lambda v: v is None or rule(v))


def plain(value: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def listish(v: Any) -> bool:
    return isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig"


def check(setting: str, value: Any, rule: Rule) -> None:
    if not rule(value):
        raise UserError(f"{setting}={shorten(redact(repr(plain(value))), 200)} is invalid: expected {rule.allowed}")


def setting(default: Any = None, rule: Rule | None = None, *, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its rule."""
    meta = {"rule": rule} if rule is not None else {}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def names(conf: type) -> list[str]:
    return [f.name for f in dataclasses.fields(conf) if not f.name.startswith("_") and f.name != "defaults"]


MOVED = {"hydra.launcher.n_jobs": "how many trials run at once is hydra.sweeper.n_jobs (the launcher answers with "
                                   "its slots)"}


def validate(prefix: str, conf: type, values: dict[str, Any], what: str) -> None:
    """`values` (a launcher's or the sweeper's settings, as Hydra passes them) against `conf`'s fields and rules."""
    known = names(conf)
    unknown = sorted(set(values) - set(known))
    if unknown:
        key = f"{prefix}.{unknown[0]}"
        if key in MOVED:
            raise UserError(f"{key} is not a setting of {what}: {MOVED[key]}")
        raise UserError(f"{key} is not a setting of {what}; it has {', '.join(known)}")
    for f in dataclasses.fields(conf):
        rule = f.metadata.get("rule")
        if rule is not None and f.name in values:
            check(f"{prefix}.{f.name}", values[f.name], rule)
