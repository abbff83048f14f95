"""What an answer cost: the engine's OpenAI `usage` (and the model it names) read into
dynamic metadata `modelroute.usage` as the answer passes, on every listener.

Two readers need it: the shared token budgets (`translate.ratelimit` charges
`prompt_tokens`/`completion_tokens` when the stream is done) and the access log
(`translate.access_log`: the JSON log line and the per-variant token statistics). One
small Lua filter serves both, so an answer is scanned once:

- JSON answers (`application/json`, parameters and letter case included) and streamed
  ones (`text/event-stream`) are scanned chunk by chunk as they pass, never held back.
  What is read is defined on the whole answer, whatever its chunking: `model` is the
  first `"model": "<value>"`, and the usage is that of the last `"usage": {` whose next
  OVERLAP bytes hold both `"prompt_tokens": <n>` and `"completion_tokens": <n>`
  (OpenAI-style engines send it in a JSON answer, and in a stream's final chunk when the
  client asks `stream_options.include_usage`). To read across chunk boundaries the last
  2 × OVERLAP bytes are searched again with the next chunk, so a `usage` whose `{`
  follows its key within OVERLAP bytes, and a `model` of under OVERLAP bytes from key
  to closing quote, are read wherever the answer is cut (an engine's JSON has a few
  bytes there; farther apart, a cut may hide them). A `"usage"` inside generated text is JSON-escaped (`\\"usage\\"`)
  and cannot match; the same holds for `"model"`. The plain-text searches (`find` with
  `plain`) pick the candidates, a pattern anchored there checks each.
  `tests/observability/test_usage_reader.py` checks Envoy's reading against a plain
  reading of the whole answer on answers cut at random.
- A stream without a `usage` gets an estimate (`usage_source: estimated`), so leaving
  the option out is no way around a budget: one completion token per JSON `data: {`
  event (engines stream about a token per chunk; an event cut between chunks counts
  once) and the request's bytes / BYTES_PER_TOKEN as prompt tokens. A JSON answer
  without one (a KServe tensor, an error) gets none.
- Other answers return at once.

The request's size comes from Envoy's `header_to_metadata` filter (its Content-Length as
`request_bytes`), so the Lua filter has no request function and never runs on the
request path.

Cost: `bench.dataplane --without usage` and `bench/lua_usage.py`; what each part costs
is in bench/README.md ("the data plane's floor"). Chosen over `json_to_metadata`
for JSON answers, which buffers the whole body before forwarding it (a large tensor
answer would wait, or hit the buffer limit) and, in its source, logs a warning for every
answer without the keys (errors, embeddings, tensors); and over ext_proc (a gRPC round
trip per chunk).

Rank 600: after authentication and rate limits, so a refused request never runs it.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2 as h2m_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from routing_engine import ir
from routing_engine.translate.plugin import RANKS, HttpFilter, Plugin
from routing_engine.translate.xds import pack

USAGE_FILTER = "modelroute.usage"  # the Lua filter's name in the chain
REQUEST_BYTES_FILTER = "modelroute.request_bytes"  # header_to_metadata: the request's Content-Length
USAGE_NAMESPACE = "modelroute.usage"
PROMPT_TOKENS = "prompt_tokens"  # OpenAI `usage` keys, kept under the same names
COMPLETION_TOKENS = "completion_tokens"
MODEL = "model"  # the model the answer names
SOURCE = "usage_source"  # reported | estimated
REQUEST_BYTES = "request_bytes"  # the request's Content-Length, for a stream's prompt estimate
BYTES_PER_TOKEN = 4  # prompt estimate for streams without usage (the rate-limit service's rule of thumb)
OVERLAP = 512

_LUA = """
local NS = "@NS@"
local OVERLAP = @OVERLAP@
local KEEP = 2 * OVERLAP
local function count(text, marker, after)
  local n, at = 0, string.find(text, marker, math.max(1, after - #marker + 2), true)
  while at ~= nil do
    n = n + 1
    at = string.find(text, marker, at + #marker, true)
  end
  return n
end
local function first_model(text)
  local at = string.find(text, '"model"', 1, true)
  while at ~= nil do
    local value = string.match(text, '^%s*:%s*"([^"\\\\]*)"', at + 7)
    if value ~= nil then return value end
    at = string.find(text, '"model"', at + 1, true)
  end
end
function envoy_on_response(handle)
  local kind = handle:headers():get("content-type")
  if kind == nil then return end
  kind = string.lower(string.match(kind, "^%s*([^;%s]+)") or "")
  local stream = kind == "text/event-stream"
  if not stream and kind ~= "application/json" then return end
  local tail, prompt, completion, model, events = "", nil, nil, nil, 0
  for chunk in handle:bodyChunks() do
    local text = chunk:getBytes(0, chunk:length())
    if tail ~= "" then text = tail .. text end
    if stream then events = events + count(text, "data: {", #tail) end
    if model == nil then model = first_model(text) end
    local at = string.find(text, '"usage"', 1, true)
    while at ~= nil do
      local _, open = string.find(text, '^%s*:%s*{', at + 7)
      if open ~= nil then
        local usage = string.sub(text, open, open + OVERLAP)
        local p = string.match(usage, '"prompt_tokens"%s*:%s*(%d+)')
        local c = string.match(usage, '"completion_tokens"%s*:%s*(%d+)')
        if p ~= nil and c ~= nil then prompt, completion = p, c end
      end
      at = string.find(text, '"usage"', at + 1, true)
    end
    if #text > KEEP then tail = string.sub(text, -KEEP) else tail = text end
  end
  local meta = handle:streamInfo():dynamicMetadata()
  if model ~= nil then meta:set(NS, "@MODEL@", model) end
  local source = "reported"
  if prompt == nil then
    if not stream then return end
    local bytes = tonumber((meta:get(NS) or {})["@REQUEST_BYTES@"] or "0") or 0
    prompt, completion, source = tostring(math.ceil(bytes / @PER_TOKEN@)), tostring(events), "estimated"
  end
  meta:set(NS, "@PROMPT@", prompt)
  meta:set(NS, "@COMPLETION@", completion)
  meta:set(NS, "@SOURCE@", source)
end
"""


def usage_lua() -> str:
    """The filter's Lua source (also what `bench/lua_usage.py` measures)."""
    source = _LUA
    for placeholder, value in (("@NS@", USAGE_NAMESPACE), ("@OVERLAP@", str(OVERLAP)), ("@MODEL@", MODEL),
                               ("@PER_TOKEN@", str(BYTES_PER_TOKEN)), ("@PROMPT@", PROMPT_TOKENS),
                               ("@COMPLETION@", COMPLETION_TOKENS), ("@SOURCE@", SOURCE),
                               ("@REQUEST_BYTES@", REQUEST_BYTES)):
        source = source.replace(placeholder, value)
    return source


def usage_filter() -> HttpFilter:
    config = lua_pb2.Lua()
    config.default_source_code.inline_string = usage_lua()
    return HttpFilter(name=USAGE_FILTER, typed_config=pack(config))


def request_bytes_filter() -> HttpFilter:
    config = h2m_pb2.Config()
    rule = config.request_rules.add(header="content-length")
    rule.on_header_present.metadata_namespace = USAGE_NAMESPACE
    rule.on_header_present.key = REQUEST_BYTES
    rule.on_header_present.type = h2m_pb2.Config.STRING
    return HttpFilter(name=REQUEST_BYTES_FILTER, typed_config=pack(config))


def usage_filters() -> tuple[HttpFilter, HttpFilter]:
    """The request's size, then the answer's reader (`usage_lua`)."""
    return request_bytes_filter(), usage_filter()


def metadata(key: str) -> str:
    """The access-log / hits_addend command operator for one usage key."""
    return f"%DYNAMIC_METADATA({USAGE_NAMESPACE}:{key})%"


class UsagePlugin(Plugin):
    name = "usage"
    rank = RANKS["usage"]

    def listener_facet(self, route: ir.Route) -> None:
        return None  # one filter on every listener, whatever its routes

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        return usage_filters()
