"""prefixAffinity (issue 18): requests whose prompts start alike go to the same replica.

A model server keeps the KV cache of prompts it has seen (vLLM's prefix caching), so a
request whose prompt starts like an earlier one's skips that part of the prefill when it
lands on the same replica. The cluster hashes consistently (MAGLEV with a load bound,
`cluster.py`) on a header its routes name (`route.PREFIX_HASH_HEADER`); Envoy's hash
policies read headers, cookies, query parameters and filter state, never the body, so a
small Lua filter (`PREFIX_HASH_LUA`) puts a hash of the prompt's start into that header:

- it runs only on routes marked with this filter's route metadata (`prefix_bytes`), and
  first removes any such header a client sent, so no client picks a replica itself;
- it reads the buffered JSON body (Envoy's buffer limit, 1 MiB by default, applies, as
  for `model` matching), finds `"messages"` (chat) or `"prompt"` (completions) in its
  first SCAN_BYTES and hashes the next PREFIX_BYTES bytes: the system prompt and the
  first turns, which is what requests of one application share. Different clients
  serialize JSON differently, so the same prompt from two client libraries may hash
  apart; requests of one client hash alike.
- no body, no JSON prompt: no header, and the consistent hash picks at random.

Its cost per request is in `bench/results/inference_routing.json` (`bench/inference_routing.py`).
The filter comes after authentication and rate limits (rank 550): a refused request is
never buffered for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from routing_engine import ir
from routing_engine.translate.plugin import RANKS, HttpFilter, Plugin
from routing_engine.translate.route import PREFIX_HASH_HEADER
from routing_engine.translate.xds import pack

PREFIX_HASH_FILTER = "modelroute.prefix_hash"  # the Lua filter's name, and its route metadata key
PREFIX_BYTES = 1024  # hashed from the start of "messages" / "prompt"
SCAN_BYTES = 65536  # where the prompt's key is looked for
PREFIX_HASH_LUA = """
local HEADER = "%(header)s"
function envoy_on_request(handle)
  handle:headers():remove(HEADER)
  local wanted = handle:metadata():get("prefix_bytes")
  if wanted == nil then return end
  local body = handle:body()
  if body == nil then return end
  local head = body:getBytes(0, math.min(body:length(), %(scan)d))
  local from = string.find(head, '"messages"', 1, true) or string.find(head, '"prompt"', 1, true)
  if from == nil then return end
  local text = string.sub(head, from, from + wanted - 1)
  local h = 0
  for i = 1, #text do h = (h * 31 + string.byte(text, i)) %% 2147483647 end
  handle:headers():replace(HEADER, string.format("%%x", h))  -- fetched again: body() invalidates the first
end
"""


def prefix_hash_filter() -> HttpFilter:
    config = lua_pb2.Lua()
    config.default_source_code.inline_string = PREFIX_HASH_LUA % {"header": PREFIX_HASH_HEADER, "scan": SCAN_BYTES}
    return HttpFilter(name=PREFIX_HASH_FILTER, typed_config=pack(config))


class PrefixAffinityPlugin(Plugin):
    name = "prefix_affinity"
    rank = RANKS["prefix_affinity"]

    def listener_facet(self, route: ir.Route) -> bool:
        return bool(route.prefix_hash)

    def http_filters(self, listener: ir.Listener) -> Sequence[HttpFilter]:
        return [prefix_hash_filter()] if any(r.prefix_hash for r in listener.routes) else ()

    def patch_route(self, route: ir.Route, proto: rc.Route) -> None:
        if route.prefix_hash:
            proto.metadata.filter_metadata[PREFIX_HASH_FILTER].fields["prefix_bytes"].number_value = PREFIX_BYTES
