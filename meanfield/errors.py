"""One error type for bad input, and the checks that raise it.

Every check names the argument, the value it got and what is allowed, so that a user (or the
command line, which turns these into usage errors) never has to read a traceback to know what
to change. Following sympy's convention, a condition on a symbolic value only fails when it is
*provably* false: ``sigma_w2 = Symbol("s", positive=True)`` passes, ``-1`` does not.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import sympy

__all__ = [
    "InvalidArgument",
    "closest",
    "check_choice",
    "check_int",
    "check_real",
]


class InvalidArgument(ValueError):
    """Bad input to a meanfield function: names the argument, the value, and what is allowed.

    Example:
        >>> try:
        ...     check_int("width", 0, minimum=1)
        ... except InvalidArgument as err:
        ...     print(err)
        width=0 is not allowed: expected an integer >= 1
    """

    def __init__(self, argument: str, value: Any, allowed: str, hint: str | None = None):
        self.argument = argument
        self.value = value
        self.allowed = allowed
        self.hint = hint
        message = f"{argument}={_short(value)} is not allowed: expected {allowed}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.argument, self.value, self.allowed, self.hint))


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def closest(word: str, options: Iterable[str]) -> str | None:
    """The option most similar to ``word`` (for 'did you mean' hints), or None.

    Example:
        >>> closest("rleu", ["relu", "tanh", "erf"])
        'relu'
    """
    matches = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.5)
    return matches[0] if matches else None


def check_choice(argument: str, value: str, options: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``options``; otherwise raise, listing them and the closest.

    Example:
        >>> check_choice("kind", "batch", ["batch", "layer"])
        'batch'
    """
    options = list(options)
    if value in options:
        return value
    near = closest(value, options)
    raise InvalidArgument(
        argument,
        value,
        "one of " + ", ".join(options),
        f"did you mean {near!r}?" if near else None,
    )


def check_int(argument: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer within [minimum, maximum]; otherwise raise.

    Example:
        >>> check_int("depth", 3, minimum=1)
        3
    """
    bounds = _bounds_text(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, sympy.Integer)):
        raise InvalidArgument(argument, value, "an integer" + bounds)
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidArgument(argument, value, "an integer" + bounds)
    return value


def _bounds_text(minimum: Any, maximum: Any, strict_min: bool = False) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if strict_min else '>='} {minimum}")
    if maximum is not None:
        parts.append(f"<= {maximum}")
    return (" " + " and ".join(parts)) if parts else ""


def check_real(
    argument: str,
    value: Any,
    minimum: float | None = None,
    strict_min: bool = False,
    maximum: float | None = None,
    symbolic: bool = True,
) -> Any:
    """Validate a real parameter; numbers come back as float, sympy expressions unchanged.

    A sympy expression passes unless its assumptions prove it out of range (sympy.stats style).

    Example:
        >>> check_real("sigma_w2", 2, minimum=0, strict_min=True)
        2.0
        >>> s = sympy.Symbol("sigma_w2", positive=True)
        >>> check_real("sigma_w2", s, minimum=0, strict_min=True) is s
        True
    """
    allowed = "a finite real number" + _bounds_text(minimum, maximum, strict_min)
    if isinstance(value, sympy.Basic) and not value.is_number:
        if not symbolic:
            raise InvalidArgument(argument, value, allowed, "symbolic values are not accepted here")
        if value.is_real is False:
            raise InvalidArgument(argument, value, allowed)
        # an expression in symbols that carries an infinity, nan or the imaginary unit (s + oo, I*s) is not a
        # finite real number whatever the symbols stand for, although sympy cannot always prove it
        bad = [a for a in (sympy.oo, -sympy.oo, sympy.zoo, sympy.nan, sympy.I) if value.has(a)]
        if bad:
            raise InvalidArgument(argument, value, allowed, f"it contains {bad[0]}")
        if minimum is not None:
            diff = value - minimum
            if (diff.is_negative) or (strict_min and diff.is_zero) or (strict_min and diff.is_nonpositive):
                raise InvalidArgument(argument, value, allowed)
        if maximum is not None and (value - maximum).is_positive:
            raise InvalidArgument(argument, value, allowed)
        return value
    if isinstance(value, bool):
        raise InvalidArgument(argument, value, allowed)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(argument, value, allowed) from None
    if isinstance(value, sympy.Basic) and not value.is_real:
        raise InvalidArgument(argument, value, allowed)
    if not math.isfinite(number):
        raise InvalidArgument(argument, value, allowed)
    if minimum is not None and (number < minimum or (strict_min and number == minimum)):
        raise InvalidArgument(argument, value, allowed)
    if maximum is not None and number > maximum:
        raise InvalidArgument(argument, value, allowed)
    # Exact sympy numbers (Rational(1, 2)) stay exact so that derivations stay rational.
    return value if isinstance(value, sympy.Basic) else number
