"""The usage reader (`routing_engine.translate.usage`) in the real Envoy reads what a
plain reading of the whole answer gives, however the answer is cut into chunks.

Hypothesis builds answers from the pieces that matter (model fields, usage objects with
keys missing, reordered or spaced out, JSON-escaped look-alikes, SSE event starts, noise),
cuts them at random points, and a scripted upstream sends each cut as its own HTTP chunk.
Envoy's verdict is read from a JSON access log line per request (the same metadata the
token budgets and the access log read) and compared with `whole_answer_reading`, the
definition in the module's docstring written as regular expressions over the whole
answer. The answer must also reach the client unchanged (the reader never holds or edits
it)."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.local.envoy_process import EnvoyProcess
from routing_engine.serialize import to_dict
from routing_engine.translate import usage
from tests.support import free_port
from tests.support.static_proxy import proxy_bootstrap

WS = rb"[ \t\n\v\f\r]*"  # Lua's %s*
MODEL = re.compile(rb'"model"' + WS + rb":" + WS + rb'"([^"\\]*)"')
USAGE = re.compile(rb'"usage"' + WS + rb":" + WS + rb"\{")
PROMPT = re.compile(rb'"prompt_tokens"' + WS + rb":" + WS + rb"([0-9]+)")
COMPLETION = re.compile(rb'"completion_tokens"' + WS + rb":" + WS + rb"([0-9]+)")
EVENT = b"data: {"
ID_HEADER = "x-test-answer"


@dataclass(frozen=True)
class Answer:
    content_type: str | None
    chunks: tuple[bytes, ...]
    request_padding: int  # the request body's size varies the stream estimate

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def whole_answer_reading(answer: Answer, request_bytes: int) -> dict[str, str | None]:
    """What the reader must leave in metadata (None: not set), from the whole answer."""
    none: dict[str, str | None] = {"model": None, "prompt": None, "completion": None, "source": None}
    kind = (answer.content_type or "").split(";")[0].strip().lower()
    stream = kind == "text/event-stream"
    if answer.content_type is None or (not stream and kind != "application/json"):
        return none
    body = answer.body
    found = MODEL.search(body)
    model = found.group(1).decode() if found else None
    prompt = completion = None
    for opened in USAGE.finditer(body):
        window = body[opened.end() - 1:opened.end() + usage.OVERLAP]
        p, c = PROMPT.search(window), COMPLETION.search(window)
        if p and c:
            prompt, completion = p.group(1).decode(), c.group(1).decode()
    if prompt is not None:
        return {"model": model, "prompt": prompt, "completion": completion, "source": "reported"}
    if not stream:
        return {**none, "model": model}
    return {"model": model, "prompt": str(math.ceil(request_bytes / usage.BYTES_PER_TOKEN)),
            "completion": str(body.count(EVENT)), "source": "estimated"}


# --- answers -----------------------------------------------------------------------

_SPACE = st.sampled_from(["", " ", "  ", "\n", "\t", " \r\n "])
_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_./:", min_size=1, max_size=30)
_NOISE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from("\n\t"),
                 max_size=80)


@st.composite
def _model_field(draw: st.DrawFn) -> str:
    name = draw(_NAME)
    if draw(st.booleans()):
        name = draw(st.sampled_from(['a\\"b', "x\\\\y"])) + name  # escaped: this field cannot match
    return f'"model"{draw(_SPACE)}:{draw(_SPACE)}"{name}"'


@st.composite
def _usage_object(draw: st.DrawFn) -> str:
    keys = draw(st.lists(st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens",
                                          "prompt_tokens_details"]), unique=True, min_size=0, max_size=4))
    fields = []
    for key in keys:
        value = '{"cached_tokens": 0}' if key.endswith("details") else str(draw(st.integers(0, 10**6)))
        fields.append(f'"{key}"{draw(_SPACE)}:{draw(_SPACE)}{value}')
    if draw(st.booleans()):  # long objects: a key near the end of the OVERLAP window, or past it
        fields.insert(draw(st.integers(0, len(fields))), f'"padding": "{"x" * draw(st.integers(300, 600))}"')
    text = f'"usage"{draw(_SPACE)}:{draw(_SPACE)}{{' + ", ".join(fields) + "}"
    if draw(st.integers(0, 5)) == 0:
        text = json.dumps(text)[1:-1]  # inside generated text: JSON-escaped, cannot match
    return text


_PIECE = st.one_of(_NOISE, _model_field(), _usage_object(), st.just("data: {"), st.just("data: [DONE]\n\n"),
                   st.just('{"choices": [{"delta": {"content": "hi"}}]}\n\n'),
                   st.sampled_from(['"usage": null, ', '"usage"', '"usage": "x", "y": {']))  # usage, not an object
_CONTENT_TYPES = st.sampled_from([None, "application/json", "application/json; charset=utf-8", " Application/JSON ;x=y",
                                  "text/event-stream", "text/event-stream; charset=utf-8", "text/plain",
                                  "application/jsonl"])


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    body = "".join(draw(st.lists(_PIECE, min_size=1, max_size=12))).encode()
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=8))))
    bounds = [0, *[c for c in cuts if 0 < c < len(body)], len(body)]
    chunks = tuple(body[a:b] for a, b in zip(bounds, bounds[1:]) if b > a)
    return Answer(draw(_CONTENT_TYPES), chunks, draw(st.integers(0, 300)))


# --- the scripted upstream and Envoy -------------------------------------------------

class Upstream:
    """HTTP/1.1 on 127.0.0.1: the answer named by the request's ID_HEADER, one HTTP chunk
    per cut, each flushed and followed by a short pause so Envoy reads them apart."""

    def __init__(self, answers: Sequence[Answer]) -> None:
        self.answers = answers

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in head.decode().split("\r\n")[1:] if line)}
                await reader.readexactly(int(headers.get("content-length", "0")))
                answer = self.answers[int(headers[ID_HEADER])]
                kind = f"content-type: {answer.content_type}\r\n" if answer.content_type is not None else ""
                writer.write(f"HTTP/1.1 200 OK\r\n{kind}transfer-encoding: chunked\r\n\r\n".encode())
                for chunk in answer.chunks:
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await writer.drain()
                    await asyncio.sleep(0.002)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def bootstrap(port: int, upstream: int) -> dict[str, Any]:
    """The usage reader's filters in front of `upstream`, and one JSON access log line per
    request with what it read."""
    log_format = {"answer": f"%REQ({ID_HEADER})%", "model": usage.metadata(usage.MODEL),
                  "prompt": usage.metadata(usage.PROMPT_TOKENS), "completion": usage.metadata(usage.COMPLETION_TOKENS),
                  "source": usage.metadata(usage.SOURCE)}
    stdout = {"name": "envoy.access_loggers.stdout", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        "log_format": {"json_format": log_format}}}
    return proxy_bootstrap(port, upstream, http_filters=[to_dict(f) for f in usage.usage_filters()],
                           access_log=[stdout])


def _ask(port: int, answers: Sequence[Answer]) -> list[tuple[int, bytes]]:
    """Each answer once, in order, over one keep-alive connection: (request bytes, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for i, answer in enumerate(answers):
            request = json.dumps({"model": "m", "pad": "x" * answer.request_padding}).encode()
            conn.request("POST", "/v1/chat/completions", body=request,
                         headers={"content-type": "application/json", ID_HEADER: str(i)})
            response = conn.getresponse()
            out.append((len(request), response.read()))
            assert response.status == 200
    finally:
        conn.close()
    return out


def _log_lines(path: Path, count: int, timeout: float = 5.0) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = {}
        for line in path.read_text().splitlines() if path.exists() else ():
            if line.startswith("{"):
                record = json.loads(line)
                lines[int(record["answer"])] = record
        if len(lines) == count:
            return lines
        assert time.monotonic() < deadline, f"{count - len(lines)} access log lines not written"
        time.sleep(0.02)


async def _read_through_envoy(answers: Sequence[Answer], run_dir: Path) -> tuple[list[tuple[int, bytes]], dict[int, dict[str, Any]]]:
    server = await asyncio.start_server(Upstream(answers).serve, "127.0.0.1", 0)
    upstream = server.sockets[0].getsockname()[1]
    port = free_port()
    envoy = EnvoyProcess(bootstrap(port, upstream), run_dir, name="usage", log_level="warning",
                         extra_args=["--file-flush-interval-msec", "20"])
    try:
        await envoy.start(timeout=30)
        replies = await asyncio.to_thread(_ask, port, answers)
        lines = await asyncio.to_thread(_log_lines, run_dir / "usage.stdout", len(answers))
    finally:
        await envoy.stop()
        server.close()
        await server.wait_closed()
    return replies, lines


BATCH = 30


@pytest.mark.slow
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(st.lists(answers(), min_size=BATCH, max_size=BATCH))
def test_envoy_reads_what_the_whole_answer_says_however_it_is_cut(tmp_path_factory: pytest.TempPathFactory,
                                                                   batch: list[Answer]) -> None:
    replies, lines = asyncio.run(_read_through_envoy(batch, tmp_path_factory.mktemp("usage")))
    problems = []
    for i, (answer, (request_bytes, body)) in enumerate(zip(batch, replies)):
        assert body == answer.body, f"answer {i} changed on its way"
        got = {key: lines[i][key] for key in ("model", "prompt", "completion", "source")}
        expected = whole_answer_reading(answer, request_bytes)
        if got != expected:
            problems.append(f"answer {i} {answer!r}:\n  Envoy {got}\n  whole {expected}")
    assert not problems, "\n".join(problems)


def _cut(body: str, *at: int) -> tuple[bytes, ...]:
    data = body.encode()
    bounds = [0, *at, len(data)]
    return tuple(data[a:b] for a, b in zip(bounds, bounds[1:]))


def _edges() -> list[Answer]:
    """Answers cut where a reader that forgets too soon, or searches too loosely, goes wrong."""
    # A long usage object cut inside its completion_tokens digits, 514 bytes after the key
    # began: re-read only if more than OVERLAP bytes are kept (a reader keeping OVERLAP
    # would charge 12 tokens, not 12345).
    pad = 0
    while True:
        body = '{"id": "x", "usage": {"prompt_tokens": 7, "padding": "' + "x" * pad + '", "completion_tokens": 12345}}'
        brace = body.index("{", body.index('"usage"'))
        if body.index("12345") - brace >= 503:
            break
        pad += 1
    long_usage = Answer("application/json", _cut(body, brace + 505), 0)
    event = 'data: {"a": 1}\n\n'
    return [
        long_usage,
        Answer("text/event-stream", _cut(event * 3, len(event) + 2), 40),  # an event start cut in two
        Answer("application/json", _cut('{"model": "abc", "x": 1}', *range(1, 24, 2)), 0),  # two bytes a chunk
        Answer("application/json", _cut('{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}', 5, 30, 52), 0),
        # "usage" that is not an object, then an object that is not usage.
        Answer("application/json", _cut('{"usage": null, "stats": {"prompt_tokens": 5, "completion_tokens": 6}}', 20), 0),
    ]


@pytest.mark.slow
def test_envoy_reads_answers_cut_at_the_edges(tmp_path: Path) -> None:
    edges = _edges()
    replies, lines = asyncio.run(_read_through_envoy(edges, tmp_path))
    for i, (answer, (request_bytes, body)) in enumerate(zip(edges, replies)):
        assert body == answer.body
        got = {key: lines[i][key] for key in ("model", "prompt", "completion", "source")}
        assert got == whole_answer_reading(answer, request_bytes), (i, answer)
    assert lines[0]["completion"] == "12345" and lines[1]["completion"] == "3" and lines[2]["model"] == "abc"


def test_the_reference_reads_the_documented_cases() -> None:
    """The definition itself, on hand-made answers (so the property test compares with
    the rules the docstring states, not with whatever the Lua does)."""
    def read(body: str, kind: str = "application/json", request_bytes: int = 10) -> dict[str, str | None]:
        return whole_answer_reading(Answer(kind, (body.encode(),), 0), request_bytes)

    full = '{"model": "a", "usage": {"prompt_tokens": 3, "completion_tokens": 5}}'
    assert read(full) == {"model": "a", "prompt": "3", "completion": "5", "source": "reported"}
    assert read(full, kind="text/plain")["prompt"] is None
    # The last complete usage wins; one without completion_tokens does not count.
    two = '"usage": {"prompt_tokens": 1, "completion_tokens": 2} "usage": {"prompt_tokens": 9}'
    assert read(two)["prompt"] == "1"
    # Escaped look-alikes in generated text never match.
    escaped = json.dumps('"usage": {"prompt_tokens": 7, "completion_tokens": 7} "model": "evil"')
    assert read(escaped) == {"model": None, "prompt": None, "completion": None, "source": None}
    # A stream without usage is estimated: events and the request's bytes / 4.
    stream = 'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n'
    assert read(stream, kind="text/event-stream", request_bytes=9) == {
        "model": None, "prompt": "3", "completion": "2", "source": "estimated"}
