"""Argument checks at the package's public boundary, written once.

Each check returns the value when it is fine. Otherwise it raises ``TypeError`` (not a number of the
right kind) or ``ValueError`` (out of range) with a message that names the argument, the allowed values
and what it got, so a learner reads "max_new_tokens must be a non-negative integer, got -1" instead of
an error from deep inside PyTorch. ``bool`` is refused where a number is expected: ``True`` is an
``int`` in Python, but never a sensible count.
"""

import math


def _fail(ok_type, name, allowed, value):
    error = ValueError if ok_type else TypeError
    raise error(f"{name} must be {allowed}, got {value!r}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name, value, allow_none=False):
    """``value`` must be an integer >= 1 (or None when ``allow_none``)."""
    if not (value is None and allow_none) and not (_is_int(value) and value >= 1):
        _fail(_is_int(value), name, "a positive integer", value)
    return value


def non_negative_int(name, value, allow_none=False):
    """``value`` must be an integer >= 0 (or None when ``allow_none``)."""
    if not (value is None and allow_none) and not (_is_int(value) and value >= 0):
        _fail(_is_int(value), name, "a non-negative integer", value)
    return value


def int_in_range(name, value, low, high, what=""):
    """``value`` must be an integer with ``low <= value <= high``; ``what`` says where the range comes from."""
    if not (_is_int(value) and low <= value <= high):
        _fail(_is_int(value), name, f"an integer in [{low}, {high}]" + (f" ({what})" if what else ""), value)
    return value


def number(name, value, low=None, high=None, *, low_open=False, high_open=False, what=""):
    """``value`` must be a real number, not NaN, between ``low`` and ``high`` (None: no bound).

    Bounds are inclusive unless ``low_open``/``high_open``. ``what`` is added to the message.
    """
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = is_number and not math.isnan(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if high is None:
            allowed = f"a number {'>' if low_open else '>='} {low}" if low is not None else "a number"
        else:
            lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low}"
            allowed = f"a number in {lo}, {high}{')' if high_open else ']'}"
        _fail(is_number, name, allowed + (f" ({what})" if what else ""), value)
    return value
