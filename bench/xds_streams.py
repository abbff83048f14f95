"""Per-stream cost of a push (issue #15): the control plane's CPU time to bring N Envoy
streams, all holding a compiled world of R routes, up to date after one change, for
state-of-the-world and delta ADS.

    .venv/bin/python -m bench.xds_streams [--routes 10000] [--streams 1000]

The streams are the xDS server's own session objects (`sotw.SotwSession`,
`delta.DeltaSession`) subscribed as Envoy subscribes (clusters, listeners and scopes by
wildcard; endpoints and route tables by name) and ACKing every response; no gRPC, so
what is timed is the protocol work alone: `on_snapshot` for the push and `on_request`
for each ACK (a SotW ACK names all its endpoints again, as Envoy's do), with the one hook
whose work grows with the world: the control loop's judging of the gateway's ACKs for
`Programmed` (a `ProgrammedTracker` fed each compile, and each ACK and resume, as
`modelroute.control_loop` feeds it). Client work (parsing responses, building requests)
is not timed. First every stream connects and
is served the whole world (new Envoys: a rollout or a scale-up of a group; those of one
group share one answer per type, `Snapshot.whole`), then the control plane restarts and
every Envoy reconnects saying what it holds (SotW `version_info`, delta
`initial_resource_versions`), then two changes: one route re-weighted
(`worlds.edited`), and one ModelServer added (`worlds.with_servers_added`: a new
cluster, its endpoints and a scope; each stream then subscribes to the new endpoints by
name, as Envoy does for a new cluster). The first stream pays for what a snapshot
computes once for every stream (`Snapshot.subset`, `Snapshot.changes_since`); the table
shows it apart. Writes bench/results/xds_streams.json.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from bench import worlds
from bench._common import machine, write_result
from routing_engine.engine import Compiler
from modelroute.programmed import ProgrammedTracker
from routing_engine.world import Compiled, Target
from xds_server.delta import DeltaSession
from xds_server.hooks import Hooks, StreamInfo
from xds_server.snapshot import Snapshot
from xds_server.sotw import SotwSession
from xds_server.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, WILDCARD_TYPES, XdsResource

TYPES = (CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE)


class Judge(Hooks):
    """The control loop's `Programmed` bookkeeping of the gateway's ACKs (its xDS hook
    judges them in `ProgrammedTracker`; judging and publishing the statuses runs later)."""

    def __init__(self) -> None:
        self.tracker = ProgrammedTracker()

    def on_ack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
               latency_s: float) -> None:
        self.tracker.ack(type_url, resources)

    def on_resume(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str]) -> None:
        if resources:
            self.tracker.ack(type_url, resources)


class Stream:
    """One simulated Envoy: a server session and the ACKs it sends back."""

    def __init__(self, index: int, delta: bool, names: dict[str, set[str]], judge: Judge) -> None:
        kind = "ads-delta" if delta else "ads"
        session_type = DeltaSession if delta else SotwSession
        self.judge = judge
        self.session = session_type(StreamInfo(index, kind, f"envoy-{index}", "gateway"), ads=True, hooks=judge,
                                    clock=time.monotonic)
        self.delta = delta
        self.names = {type_url: set(found) for type_url, found in names.items()}  # by name, per type
        self.server_s = 0.0
        self.bytes = 0

    def _request(self, type_url: str, nonce: str = "", subscribe: Iterable[str] = (),
                 holds: Snapshot | None = None) -> Any:
        """`holds`: a first request on a new stream from an Envoy holding what that
        snapshot selects for it."""
        names = sorted(self.names.get(type_url, ())) if type_url not in WILDCARD_TYPES else []
        held: Mapping[str, XdsResource] = {}
        if holds is not None:
            held = holds.subset(type_url, None if type_url in WILDCARD_TYPES else frozenset(names))[0]
        if self.delta:
            return discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, response_nonce=nonce, resource_names_subscribe=sorted(subscribe),
                initial_resource_versions={n: r.version for n, r in held.items()})
        version = holds.subset(type_url, None if type_url in WILDCARD_TYPES else frozenset(names))[1] if holds else ""
        return discovery_pb2.DiscoveryRequest(type_url=type_url, response_nonce=nonce, resource_names=names,
                                              version_info=version)

    def _server(self, call: Any, *args: Any) -> list[bytes]:
        started = time.perf_counter()
        out: list[bytes] = call(*args)
        self.server_s += time.perf_counter() - started
        self.bytes += sum(len(b) for b in out)
        return out

    def ack_all(self, responses: list[bytes]) -> None:
        parse = discovery_pb2.DeltaDiscoveryResponse if self.delta else discovery_pb2.DiscoveryResponse
        while responses:
            later: list[bytes] = []
            for raw in responses:
                response = parse.FromString(raw)
                later += self._server(self.session.on_request, self._request(response.type_url, response.nonce))
            responses = later

    def connect(self, snapshot: Snapshot, holds: Snapshot | None = None) -> None:
        """A new stream (to a restarted control plane: a new session); the Envoy holds
        nothing, or what `holds` selects for it."""
        self.session = type(self.session)(self.session.stream, ads=True, hooks=self.judge, clock=time.monotonic)
        requests = [self._request(t, subscribe=self.names.get(t, ()), holds=holds) for t in TYPES]
        self._server(self.session.on_snapshot, snapshot)
        responses: list[bytes] = []
        for request in requests:
            responses += self._server(self.session.on_request, request)
        self.ack_all(responses)

    def push(self, snapshot: Snapshot) -> None:
        self.ack_all(self._server(self.session.on_snapshot, snapshot))
        # as Envoy does on new clusters: ask for their endpoints by name
        new = snapshot.of_type(ENDPOINT).keys() - self.names[ENDPOINT]
        if new:
            self.names[ENDPOINT] |= new
            self.ack_all(self._server(self.session.on_request, self._request(ENDPOINT, subscribe=new)))


def measure(routes: int, streams: int, delta: bool, compiled: list[tuple[str, Compiled]]) -> list[dict[str, Any]]:
    # Each snapshot is built as the control loop builds it: after the one before it was
    # served (what streams computed of that one carries over where a type is unchanged).
    judge = Judge()
    judge.tracker.use(compiled[0][1].owners, compiled[0][1].resources)
    snapshot = Snapshot.of_types(compiled[0][1].resources)
    names = {ENDPOINT: set(snapshot.of_type(ENDPOINT)), ROUTE: set(snapshot.of_type(ROUTE))}
    group = [Stream(i, delta, names, judge) for i in range(streams)]
    gc.collect()
    wall = time.perf_counter()
    for stream in group:
        stream.connect(snapshot)
    rows = [_row(routes, streams, delta, "connect (all at once)", group, time.perf_counter() - wall)]
    for stream in group:
        stream.server_s, stream.bytes = 0.0, 0
    gc.collect()
    wall = time.perf_counter()
    for stream in group:
        stream.connect(snapshot, holds=snapshot)
    rows.append(_row(routes, streams, delta, "restart: all reconnect", group, time.perf_counter() - wall))
    assert judge.tracker.all_accepted()
    for change, result in compiled[1:]:
        judge.tracker.use(result.owners, result.resources)
        snapshot = Snapshot.of_types(result.resources, previous=snapshot)
        gc.collect()
        for stream in group:
            stream.server_s, stream.bytes = 0.0, 0
        wall = time.perf_counter()
        for stream in group:
            stream.push(snapshot)
        rows.append(_row(routes, streams, delta, change, group, time.perf_counter() - wall))
        assert judge.tracker.all_accepted()
    return rows


def _row(routes: int, streams: int, delta: bool, change: str, group: list[Stream], wall: float) -> dict[str, Any]:
    costs, sent = [stream.server_s for stream in group], [stream.bytes for stream in group]
    return {"routes": routes, "streams": streams, "ads": "delta" if delta else "sotw", "change": change,
            "first_stream_ms": costs[0] * 1000, "per_stream_ms": statistics.median(costs[1:] or costs) * 1000,
            "all_streams_s": sum(costs), "bytes_per_stream": statistics.median(sent), "loop_wall_s": wall}


def compiles(routes: int) -> list[tuple[str, Compiled]]:
    """The base world's compile, then each change's, from one `Compiler` (as the
    control loop compiles them: unchanged types come back as the very same mappings)."""
    objects = worlds.objects(routes)
    base = worlds.world(routes, objects)
    compiler = Compiler()
    edited = worlds.edited(routes, objects, which=routes // 2, weight=55, base=base)
    return [(change, compiler.compile(world, Target()))
            for change, world in (("base", base), ("one route re-weighted", edited),
                                  ("one ModelServer added", worlds.with_servers_added(routes, edited, 1)))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=10000)
    parser.add_argument("--streams", type=int, default=1000)
    args = parser.parse_args(argv)
    rows = []
    for delta in (False, True):
        rows += measure(args.routes, args.streams, delta, compiles(args.routes))
    print(f"{'ADS':>5} {'change':>22} {'streams':>8} {'first stream ms':>16} {'per stream ms':>14} "
          f"{'all streams s':>14} {'KB per stream':>14}")
    for r in rows:
        print(f"{r['ads']:>5} {r['change']:>22} {r['streams']:>8,} {r['first_stream_ms']:>16.2f} "
              f"{r['per_stream_ms']:>14.3f} {r['all_streams_s']:>14.3f} {r['bytes_per_stream'] / 1024:>14.1f}")
    result = {"benchmark": "xds_streams", "machine": machine(),
              "command": "python -m bench.xds_streams " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": rows}
    write_result("xds_streams", result)
    return result


if __name__ == "__main__":
    main()
