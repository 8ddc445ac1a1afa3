"""The valid values of a config key, declared beside it in config.py: a range, a list's
items, text. Each Check can name its values (for messages and docs/configuration.md) and
give a value outside them (tests/test_config.py tries it for every key)."""
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """The valid values of a key: `accepts(value)` is true for them, `says` names them in the
    error message, `bad` is a well-typed value outside them (the config test tries it)."""
    accepts: object
    says: str
    bad: object


def at_least(low):
    return Check(lambda v: v >= low, f">= {low}", low - 1)


def above(low):
    return Check(lambda v: v > low, f"> {low}", low)


def within(low, high, open_high=False, open_low=False):
    """In [low, high], with either end open on request."""
    return Check(lambda v: (v > low if open_low else v >= low) and
                 (v < high if open_high else v <= high),
                 f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}",
                 high + 1)


def off_or_at_least(low):
    """0 (off) or >= low."""
    return Check(lambda v: v == 0 or v >= low, f"0 (off) or >= {low}", low / 2)


def off_or_above(low):
    """0 (off) or > low."""
    return Check(lambda v: v == 0 or v > low, f"0 (off) or > {low}", low)


def items(kind, check=None, length=None, nonempty=False, ascending=False):
    """A list whose items are of `kind` (int, float or str) and pass `check`."""
    def ok(item):
        if kind is float:
            return isinstance(item, (int, float)) and not isinstance(item, bool) and \
                math.isfinite(item)
        return isinstance(item, kind) and not isinstance(item, bool)

    def accepts(values):
        return (all(ok(v) and (check is None or check.accepts(v)) for v in values)
                and (length is None or len(values) == length) and (values or not nonempty)
                and (not ascending or values == sorted(values)))
    what = {int: "integers", float: "numbers", str: "strings"}[kind]
    says = (f"a list of {length}" if length else "a non-empty list of" if nonempty else
            "a list of") + f" {what}" + (f" ({check.says})" if check else "") + \
        (" in ascending order" if ascending else "")
    bad = [check.bad] * (length or 1) if check else [True]
    return Check(accepts, says, bad)


NAME_MAX, PATH_MAX = 255, 4095  # bytes of a path component and of a path (Linux's limits)


def path(nonempty=False):
    """A file-system path: text without NUL whose components and whole fit the file
    system's limits (longer ones fail every file call)."""
    def ok(v):
        encoded = v.encode(errors="surrogateescape")
        return "\0" not in v and (v or not nonempty) and len(encoded) <= PATH_MAX and \
            all(len(part) <= NAME_MAX for part in encoded.split(b"/"))
    return Check(ok, f"a path{' (non-empty)' if nonempty else ''} without NUL, each name at "
                     f"most {NAME_MAX} bytes, at most {PATH_MAX} in all", "a" * (NAME_MAX + 1))


def text(nonempty=False):
    """A string (a path, a name): no NUL characters, which no file name can hold."""
    return Check(lambda v: "\0" not in v and (v or not nonempty),
                 "non-empty text" if nonempty else "text without NUL characters",
                 "" if nonempty else "a\0b")
