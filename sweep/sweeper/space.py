"""The search space: hydra-optuna-sweeper's syntax, read with Hydra's public override parser.

    key: choice(a, b, c)              a categorical
    key: range(1, 5)                  integers 1..4 (Hydra's range excludes its end; Optuna's includes it)
    key: range(0.5, 5.5, step=0.5)    a stepped float
    key: interval(0.0, 1.0)           a float; int(interval(1, 5)) an integer
    key: tag(log, interval(1e-4, 1))  on a log scale
    key: 5                            fixed: taken out of the space, given to every trial

Every mistake is named by its key, before any trial runs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from sweep.errors import UserError, first_line, shorten

SETTING = "hydra.sweeper.params"
PLAIN = re.compile(r"[A-Za-z_][\w./-]*")  # strings an override can carry unquoted without changing their type
KEYWORDS = {"true", "false", "null", "nan", "inf", "none"}


@dataclass
class SearchSpace:
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key -> value as the user wrote it
    deletions: list[str] = field(default_factory=list)  # ~key overrides, passed on as they are

    @classmethod
    def parse(cls, params: dict[str, Any] | None, arguments: list[str]) -> "SearchSpace":
        """The space from `hydra.sweeper.params` and the command line; a command-line entry replaces the config's."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        seen: set[str] = set()
        for line in arguments:
            key = line.split("=", 1)[0].lstrip("+~")
            if "=" in line and key in seen:
                raise UserError(f"{key} is given twice on the command line; give it once")
            seen.add(key)
        lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
        space = cls()
        for line in lines:
            try:
                (override,) = parser.parse_overrides([line])
            except Exception as e:
                raise UserError(f"{SETTING}: {shorten(line, 200)!r} is not valid sweep syntax ({first_line(e)}); "
                                "see README, 'Search space'") from None
            if override.is_delete():
                space.deletions.append(line)
                continue
            key = override.get_key_element()
            value = _distribution(override, key, line)
            space.distributions.pop(key, None)
            space.fixed.pop(key, None)
            if isinstance(value, BaseDistribution):
                space.distributions[key] = value
            else:
                space.fixed[key] = value
        return space

    def overrides(self, params: dict[str, Any], replace: dict[str, Any] | None = None) -> list[str]:
        """A trial's overrides: its sampled (or custom) parameters, the fixed values (`replace` taking the place of
        any of them: a repeat's seed), then the deletions."""
        replace = replace or {}
        return ([f"{k}={override_value(v)}" for k, v in {**params, **replace}.items()]
                + [f"{k}={v}" for k, v in self.fixed.items() if k not in replace] + list(self.deletions))

    def edges(self, every_choice=lambda key: True) -> list[dict[str, Any]]:
        """Configurations at the corners that matter: every parameter low, every one high, and each choice of the
        categoricals `every_choice` names, the rest low. A setting that breaks the task tends to sit at an edge."""
        def edge(d: BaseDistribution, high: bool):
            if isinstance(d, CategoricalDistribution):
                return d.choices[-1 if high else 0]
            return d.high if high else d.low

        low = {k: edge(d, False) for k, d in self.distributions.items()}
        probes = [low, {k: edge(d, True) for k, d in self.distributions.items()}]
        for name, d in self.distributions.items():
            if isinstance(d, CategoricalDistribution) and every_choice(name):
                probes += [{**low, name: c} for c in d.choices]
        unique: dict[str, dict] = {}
        for probe in probes:
            unique.setdefault(json.dumps(probe, sort_keys=True, default=str), probe)
        return list(unique.values())

    def grid(self) -> dict[str, list]:
        """Every value of every parameter, for Optuna's GridSampler."""
        grid = {}
        for name, d in self.distributions.items():
            if isinstance(d, CategoricalDistribution):
                grid[name] = list(d.choices)
            elif isinstance(d, IntDistribution):
                grid[name] = list(range(d.low, d.high + 1, d.step))
            elif isinstance(d, FloatDistribution) and d.step is not None:
                count = int(round((Decimal(str(d.high)) - Decimal(str(d.low))) / Decimal(str(d.step)))) + 1
                grid[name] = [float(Decimal(str(d.low)) + i * Decimal(str(d.step))) for i in range(count)]
            else:
                raise UserError(f"hydra/sweeper/sampler=grid: {name} is a continuous interval; the grid needs "
                                "choice() or range() values")
        return grid


def quote(value: str) -> str:
    """A string as a Hydra override value, whatever it holds (quotes, spaces, ${...}): the one quoting rule."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("${", "\\${") + "'"


def override_value(value: Any) -> str:
    """A parameter's value as an override: strings that would parse as something else are quoted."""
    if isinstance(value, str) and not (PLAIN.fullmatch(value) and value.lower() not in KEYWORDS):
        return quote(value)
    return str(value)


def _distribution(override, key: str, line: str) -> BaseDistribution | str:
    from hydra.core.override_parser.types import Transformer

    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    name = f"{key}={shorten(line.split('=', 1)[1], 120)}"

    def bad(why: str) -> UserError:
        return UserError(f"{name} is invalid: {why} ({SETTING})")

    def encoded() -> list:
        values = list(override.sweep_iterator(transformer=Transformer.encode))
        for v in values:
            if not isinstance(v, (str, int, float, bool, type(None))):
                raise bad(f"a choice may hold strings, numbers, booleans or null, not {type(v).__name__}")
        return values

    value = override.value()
    tags = set(getattr(value, "tags", None) or ())
    unknown = tags - {"log"}
    if unknown:
        raise bad(f"unknown tag {sorted(unknown)[0]!r}; the sweeper knows tag(log, ...)")
    if override.is_choice_sweep():
        if tags:
            raise bad("tag(log, ...) applies to interval() and range(), not choice()")
        choices = encoded()
        if not choices:
            raise bad("choice() holds no value")
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        if value.step == 0:
            raise bad("range() needs a non-zero step")
        if value.shuffle or tags:
            choices = encoded()
            if not choices:
                raise bad("range() holds no value")
            return CategoricalDistribution(choices)
        return _range(value, bad)
    if override.is_interval_sweep():
        low, high = value.start, value.end
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)):
            raise bad("interval() needs two finite numbers")
        if low > high:
            raise bad(f"its low end {low} is above its high end {high}")
        is_int = isinstance(low, int) and isinstance(high, int)
        log = "log" in tags
        if log and low <= 0:
            raise bad(f"a log scale needs a low end above 0, not {low}")
        return IntDistribution(int(low), int(high), log=log) if is_int else FloatDistribution(low, high, log=log)
    raise bad("the sweeper knows choice(), range() and interval()")


def _range(value, bad) -> BaseDistribution:
    """Hydra's range (end excluded) as Optuna's (both ends included); a float range whose ends and step a float
    cannot hold exactly becomes a categorical of its values, as hydra-optuna-sweeper does."""
    start, stop, step = (Decimal(str(v)) for v in (value.start, value.stop, value.step))
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (value.start, value.stop, value.step)):
        values = range(value.start, value.stop, value.step)
        if not values:
            raise bad(f"range({value.start}, {value.stop}, step={value.step}) holds no value")
        low, high = sorted((values[0], values[-1]))
        return IntDistribution(low, high, step=abs(value.step))
    count = math.ceil((Fraction(stop) - Fraction(start)) / Fraction(step))
    if count <= 0:
        raise bad(f"range({value.start}, {value.stop}, step={value.step}) holds no value")
    last = start + (count - 1) * step
    low, high = sorted((float(start), float(last)))
    exact = (Decimal(str(low)) == min(start, last) and Decimal(str(high)) == max(start, last)
             and Decimal(str(float(abs(step)))) == abs(step))
    if exact and (float(abs(step)) >= max(math.ulp(low), math.ulp(high)) or low == high):
        return FloatDistribution(low, high, step=float(abs(step)))
    return CategoricalDistribution([float(start + i * step) for i in range(count)])
