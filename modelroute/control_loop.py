"""The control loop: world changes → one compile per node group → xDS snapshots.

Before it: providers (`set_objects`), the replica runtime or EndpointSlices
(`set_endpoints`), the canary controller (`set_live_weights`). After it: the xDS
snapshot cache, the subscribers of the engine's output (`on_compiled`: every gateway
compile, e.g. the shared rate-limit service's limits), and a status callback with every
object's status, `Programmed` included once Envoy has answered.

Changes are debounced once, here, before compiling (leading edge, so an isolated edit is
compiled at once; bursts coalesce; a cap bounds the delay; SPEC 5). Each node group keeps
its own `Compiler`, whose caches make a one-route edit re-resolve and re-serialize one
route, and its own worker task: a push hands the latest world to every group's worker
and returns, so a slow compile of one group (a 10,000-entry ModelRoute in a sidecar
scope) never holds back the snapshots of the others; a worker that is still compiling
compiles the newest world next (changes coalesce per group). Compiles run in threads,
with the cyclic GC paused (`gc_paused`), and the heap alive after the first one is
frozen out of later collections (`compile_paused(freeze=True)`).
A group is compiled from the moment its first Envoy connects; the gateway group is always
compiled, because statuses come from the unscoped gateway compile. Gateway snapshots also
carry the readiness listener when the placement has one (`routing_engine.readiness`).

Metrics (`modelroute.metrics`, optional): compile time per group, objects by kind
(counted when scraped), NACKs by owning object, and edit→served: each input kind
(objects, endpoints, canary weights) remembers when its first change not yet compiled
arrived; the gateway compile
that takes it in carries those times until the gateway Envoys accept all of it (a later
compile that replaces it before then inherits the earliest), and a rejection drops them.

Envoy's verdicts on the gateway compile drive `Quarantine` (modelroute/quarantine.py):
if Envoy rejects a config anyway, the objects responsible are found by bisecting what
changed and held back alone, so every other object keeps being served and edited.
A compile that raises (an engine bug) is logged and the group keeps its last snapshot.
The route tables and scopes of a listener that was just replaced stay in the group's
snapshot for its draining connections, failing closed where the change touched a route
(`modelroute.retired_routes`).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from kit.collector import gc_paused
from kit.tasks import cancel_and_wait, spawn
from kit.debounce import Debouncer
from modelroute.metrics import ControlPlaneMetrics
from modelroute.programmed import Merged, ProgrammedTracker, with_programmed
from modelroute.quarantine import Quarantine
from routing_engine.readiness import readiness_resources
from modelroute.retired_routes import RetiredRoutes
from modelroute.targets import GATEWAY, Placement, target_for_group
from modelroute.tracing import NO_TRACING, Span, Tracer
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.engine import Compiler
from routing_engine import plugins as plugin
from routing_engine.plugins import Plugin
from routing_engine.world import BackendEndpoint, Compiled, EnvoyResource, ObjectStatus, Target, World
from xds_server import Hooks, Snapshot, SnapshotCache, StreamInfo, check_consistency

log = logging.getLogger("modelroute.control")

# May be a coroutine function: it runs in the status publisher task, never on the push path.
StatusCallback = Callable[[Compiled, Mapping[ObjectKey, ObjectStatus]], Awaitable[None] | None]
# Runs on the push path, before the compile's snapshot is handed to the cache: quick.
CompiledCallback = Callable[[Compiled], None]


def compile_paused(compiler: Compiler, world: World, target: Target, *, freeze: bool = False) -> Compiled:
    """One compile as the control loop runs it (also what `bench/compile.py` measures).

    With `freeze` (the first compile), everything alive at its end (the world and the
    compiler's caches) is moved out of the collector's sight before the collector comes
    back, so later collections scan only what changed since. Frozen without collecting
    first: a compile makes no cyclic garbage (`tests/wiring/test_gc_policy.py`), so a
    collection there finds nothing, yet at 10,000 routes it cost 0.95 s of the startup
    path (a pass over the compile's 1.3 M new objects when the collector came back,
    0.25 s, then a full collection, 0.7 s). What is frozen is never collected: cyclic
    garbage made before the first compile ends (by any thread), if any, stays; once."""
    with gc_paused():
        compiled = compiler.compile(world, target)
        if freeze:
            gc.freeze()
        return compiled


SWITCH_INTERVAL_S = 0.001  # CPython's default is 0.005


def latency_first_switching() -> None:
    """Hand the GIL between threads every millisecond instead of every five.

    Compiles and status publications run in threads, and an edit that lands while one
    holds the GIL waits for it at every step of its way to Envoy (the event loop, the
    compile thread, the push): with 5 ms turns that wait is most of the edit → served
    tail at 10,000 routes. Measured (`bench.convergence --routes 10000 --edits 15
    --systems modelroute`, two runs each): file edit p99 72 / 68 ms → 53 / 54 ms,
    ControlLoop p99 61 / 53 → 48 / 50 ms, p50 ~21 → ~19 ms. Process-wide, like the
    collector policy: `App.start` calls it, for both run modes."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


@dataclass(eq=False, slots=True)
class _GroupWork:
    """One node group's compile worker (running while the group has inputs to compile):
    the newest inputs it should compile, and how many inputs its last finished compile
    had seen."""

    wanted: tuple[World, tuple[Resource, ...], int, Span] | None = None
    synced: int = 0
    # Input kind → when its first change not compiled yet arrived (gateway group only:
    # edit→served); kept across pushes that land while a compile runs.
    pending: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class ControlLoop:
    def __init__(self, *, placement: Placement, on_status: StatusCallback | None = None,
                 window: float = 0.05, max_delay: float = 0.5, plugins: Sequence[Plugin] | None = None,
                 group_grace: float = 30.0, metrics: ControlPlaneMetrics | None = None,
                 tracer: Tracer = NO_TRACING) -> None:
        self.placement = placement
        # A node group whose last stream closed is forgotten this long after (a reconnect
        # in between keeps it): scoped sidecars come and go, and every group left behind
        # would be compiled on every edit forever.
        self.group_grace = group_grace
        self._streams: Counter[str] = Counter()
        self._collecting: dict[str, asyncio.TimerHandle] = {}
        self.metrics = metrics
        self.tracer = tracer
        self._pending_since: dict[str, float] = {}  # input kind → first change not compiled yet
        self._unserved: dict[str, float] = {}  # ... compiled for the gateway, not accepted yet
        # None: the built-in features plus the `modelroute.plugins` entry points.
        self._plugins = plugin.with_builtin(plugin.discover()) if plugins is None else tuple(plugins)
        self._on_status = on_status
        self._on_compiled: list[CompiledCallback] = []
        self._readiness: tuple[EnvoyResource, ...] = ()
        if placement.readiness_port is not None:
            self._readiness = readiness_resources(placement.listen_address or "0.0.0.0", placement.readiness_port)
        self._cache: SnapshotCache | None = None
        self._objects: tuple[Resource, ...] = ()
        self._refused: frozenset[ObjectKey] = frozenset()
        self._endpoints: Mapping[ObjectKey, tuple[BackendEndpoint, ...]] = MappingProxyType({})
        self._live_weights: Mapping[ObjectKey, tuple[int, int]] = MappingProxyType({})
        self._groups: set[str] = {GATEWAY}
        self._compilers: dict[str, Compiler] = {}  # one per group: its caches make an edit cheap
        self._work: dict[str, _GroupWork] = {}  # one compile worker per group
        self._snapshots: dict[str, Snapshot] = {}  # each group's last, whose type versions carry over
        self._retired: dict[str, RetiredRoutes] = {}  # tables and scopes of each group's replaced listeners
        self._heap_frozen = False
        self.compiled: dict[str, Compiled] = {}
        self.tracker = ProgrammedTracker()
        self.quarantine = Quarantine()
        self._judged = True  # the latest gateway compile has had its verdict (or there is none)
        self.debouncer = Debouncer(self._push, window=window, max_delay=max_delay, name="world")
        self.hooks: Hooks = _LoopHooks(self)
        self.generation = 0  # completed pushes, for tests and waits
        self._pushed = asyncio.Event()
        self._changes = 0  # inputs received
        self._status_task: asyncio.Task[None] | None = None
        self._status_wanted = asyncio.Event()
        self._status_published = asyncio.Event()
        self._status_requested = 0
        self._status_done = 0
        self._merged = Merged()  # the status publisher's memory of merged statuses

    @property
    def plugins(self) -> tuple[Plugin, ...]:
        """The features every compile uses (the admission webhook checks `spec.extensions` against them)."""
        return self._plugins

    def attach(self, cache: SnapshotCache) -> None:
        self._cache = cache

    def on_compiled(self, callback: CompiledCallback) -> None:
        """Call `callback` with every gateway compile (the unscoped one: every sidecar's
        resources are among its) as soon as it is made, before its snapshot reaches the
        cache, so what it configures is in place before any Envoy has the config. An
        exception is logged; the push goes on."""
        self._on_compiled.append(callback)

    # --- inputs ----------------------------------------------------------------------

    def set_objects(self, objects: Sequence[Resource], refused: frozenset[ObjectKey] = frozenset()) -> None:
        """`refused`: the objects the provider holds but left out as invalid (`World.refused`)."""
        self._objects = tuple(objects)
        self._refused = refused
        if self.metrics is not None:
            self.metrics.objects.set(self._objects)  # counted by kind when scraped
        self._changed("objects")

    def set_endpoints(self, endpoints: Mapping[ObjectKey, tuple[BackendEndpoint, ...]]) -> None:
        self._endpoints = MappingProxyType(dict(endpoints))
        self._changed("endpoints")

    def set_live_weights(self, weights: Mapping[ObjectKey, tuple[int, int]]) -> None:
        self._live_weights = MappingProxyType(dict(weights))
        self._changed("weights")

    def add_group(self, group: str) -> None:
        if group not in self._groups:
            log.info("node group joined: group=%s", group, extra={"node_group": group})
            self._groups.add(group)
            self._changed()

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(self._groups)

    def stream_opened(self, group: str) -> None:
        self._streams[group] += 1
        timer = self._collecting.pop(group, None)
        if timer is not None:
            timer.cancel()
        self.add_group(group)

    def stream_closed(self, group: str) -> None:
        self._streams[group] -= 1
        if self._streams[group] <= 0 and group != GATEWAY and group not in self._collecting:
            self._collecting[group] = asyncio.get_running_loop().call_later(self.group_grace, self._collect, group)

    def _collect(self, group: str) -> None:
        """Forget a group nobody has been connected to for `group_grace` seconds: its
        compile, caches and snapshot (the gateway group stays: statuses come from it)."""
        self._collecting.pop(group, None)
        if self._streams[group] > 0 or group == GATEWAY:
            return
        del self._streams[group]
        self._groups.discard(group)
        work = self._work.pop(group, None)
        if work is not None and work.task is not None:
            work.task.cancel()
        self._compilers.pop(group, None)
        self._snapshots.pop(group, None)
        self._retired.pop(group, None)
        self.compiled.pop(group, None)
        if self._cache is not None:
            self._cache.clear_snapshot(group)
        log.info("node group collected: group=%s", group, extra={"node_group": group})

    def _changed(self, what: str | None = None) -> None:
        if what is not None:
            self._pending_since.setdefault(what, time.monotonic())
        self._changes += 1
        self.debouncer.notify()

    def judge(self) -> None:
        """Act once on the gateway Envoys' verdict on the latest compile: a rejection
        quarantines or holds back suspects, an acceptance makes it all good (and releases
        held objects); either may need another compile."""
        if self._judged:
            return
        rejected = self.tracker.rejected()
        if rejected is not None:
            self._judged = True
            log.warning("envoy rejected the gateway config: owners=%s error=%s",
                        ",".join(str(o) for o in sorted(rejected.owners)), rejected.message,
                        extra={"resources": [n for _, n in rejected.resources]})
            self._unserved = {}
            if self.metrics is not None:
                self.metrics.rejected(rejected.owners)
            if self.quarantine.rejected_by_envoy(rejected.owners, rejected.message):
                self._changed()
        elif self.tracker.all_accepted():
            self._judged = True
            self._served()
            if self.quarantine.accepted():
                self._changed()

    def _served(self) -> None:
        """The gateway Envoys hold every resource of the latest compile: its changes are served."""
        now = time.monotonic()
        if self.metrics is not None:
            for what, since in self._unserved.items():
                self.metrics.edit_to_served.labels(what).observe(now - since)
        self._unserved = {}

    @property
    def objects(self) -> tuple[Resource, ...]:
        return self._objects

    # --- outputs ---------------------------------------------------------------------

    async def wait_pushed(self, after: int, *, timeout: float) -> int:
        """Wait until a push later than generation `after` completed; return its number."""
        async def _wait() -> int:
            while self.generation <= after:
                self._pushed.clear()
                await self._pushed.wait()
            return self.generation
        return await asyncio.wait_for(_wait(), timeout)

    async def wait_synced(self, *, timeout: float) -> None:
        """Wait until every input received so far has been compiled, for every node group,
        and handed to the cache."""
        def synced() -> bool:
            return all(self._work.get(g) is not None and self._work[g].synced == self._changes for g in self._groups)

        async def _wait() -> None:
            while not synced():
                self._pushed.clear()
                await self._pushed.wait()
        await asyncio.wait_for(_wait(), timeout)

    def publish_status(self) -> None:
        """Ask for the statuses to be published. Coalesced, and done by a task of its own:
        a status view of 20,000 objects takes about a second to build and write, and it
        must never hold up a push or an ACK."""
        if self._on_status is None:
            return
        self._status_requested += 1
        self._status_wanted.set()
        if self._status_task is None:
            self._status_task = spawn(self._publish_statuses(), name="status-publisher")

    async def status_settled(self, *, timeout: float) -> None:
        """Wait until every status publication asked for so far has been made."""
        async def _wait() -> None:
            while self._status_done < self._status_requested:
                self._status_published.clear()
                await self._status_published.wait()
        await asyncio.wait_for(_wait(), timeout)

    async def close(self) -> None:
        for work in self._work.values():
            await cancel_and_wait(work.task)
        self._work.clear()
        await cancel_and_wait(self._status_task)
        self._status_task = None
        for timer in self._collecting.values():
            timer.cancel()
        self._collecting.clear()

    async def _publish_statuses(self) -> None:
        assert self._on_status is not None
        while True:
            await self._status_wanted.wait()
            self._status_wanted.clear()
            started = time.monotonic()
            requested = self._status_requested
            compiled = self.compiled.get(GATEWAY)
            if compiled is not None:
                # The verdicts are read here (they change on the loop); turning them into
                # every object's status is pure and O(objects): in a thread.
                verdicts = self.tracker.verdicts()
                programmed = await asyncio.to_thread(
                    lambda: with_programmed(compiled.statuses, verdicts.conditions(), self._merged))
                statuses = self.quarantine.statuses(programmed)
                try:
                    result = self._on_status(compiled, statuses)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("status callback failed")
            self._status_done = requested
            self._status_published.set()
            # Paced: at 10,000 objects a publication takes a good part of a second of CPU
            # (building and writing every status), which every push and ACK would wait
            # behind if one followed another on each ACK; as long again is left to them.
            await asyncio.sleep(min(time.monotonic() - started, 1.0))

    async def _push(self) -> None:
        """Hand the latest world to every node group's worker (the debouncer's push)."""
        seen = self._changes
        compiling, self._pending_since = self._pending_since, {}
        effective = self.quarantine.effective(self._objects)
        world = World(effective, self._endpoints, self._live_weights, self._refused)
        with self.tracer.span("modelroute.push", objects=len(world.objects),
                              inputs=",".join(sorted(compiling))) as push:
            for group in sorted(self._groups):
                work = self._work.setdefault(group, _GroupWork())
                work.wanted = (world, effective, seen, push)
                if group == GATEWAY:
                    for what, since in compiling.items():
                        work.pending[what] = min(since, work.pending.get(what, since))
                if work.task is None or work.task.done():
                    work.task = spawn(self._compile_worker(group, work), name=f"compile-{group}", endless=False)

    async def _compile_worker(self, group: str, work: _GroupWork) -> None:
        """Compile `group` while it has newer inputs, one compile at a time; then end (the
        next push starts another)."""
        while work.wanted is not None:
            world, effective, seen, push = work.wanted
            compiling, work.wanted, work.pending = work.pending, None, {}
            with self.tracer.span("modelroute.compile", push, node_group=group) as span:
                await self._compile_group(group, world, effective, compiling, span)
            work.synced = seen
            self.publish_status()
            self.generation += 1
            self._pushed.set()

    async def _compile_group(self, group: str, world: World, effective: tuple[Resource, ...],
                             compiling: Mapping[str, float], span: Span) -> None:
        """Compile one node group and hand its snapshot to the cache."""
        started = time.perf_counter()
        compiler = self._compilers.get(group)
        if compiler is None:
            compiler = self._compilers[group] = Compiler(self._plugins)
        target = target_for_group(group, self.placement)
        # Compiling is pure CPU; a thread keeps the xDS streams answering meanwhile.
        freeze = not self._heap_frozen
        try:
            compiled = await asyncio.to_thread(compile_paused, compiler, world, target, freeze=freeze)
        except Exception:  # an engine bug: Envoy keeps this group's last snapshot
            log.exception("compile failed: group=%s", group, extra={"node_group": group})
            self._compilers.pop(group, None)  # its caches may be half-updated
            span.set(error="compile failed")
            return
        self._heap_frozen = self._heap_frozen or freeze
        own = self._readiness if target.role == "gateway" else ()
        retired = self._retired.setdefault(group, RetiredRoutes()).update(self.compiled.get(group), compiled)
        snapshot = Snapshot.of_types(compiled.resources, (*own, *retired), previous=self._snapshots.get(group))
        self._snapshots[group] = snapshot
        problems = check_consistency(snapshot)
        if problems:  # an engine bug; Envoy keeps the last good snapshot
            log.error("inconsistent snapshot not pushed: group=%s problems=%s", group, problems,
                      extra={"node_group": group})
            span.set(error="inconsistent snapshot")
            return
        self.compiled[group] = compiled
        if group == GATEWAY:
            for callback in self._on_compiled:
                try:
                    callback(compiled)
                except Exception:
                    log.exception("compile subscriber failed: group=%s", group, extra={"node_group": group})
        if self._cache is not None:
            self._cache.set_snapshot(group, snapshot)
            await asyncio.sleep(0)  # the streams take the snapshot before the bookkeeping below
        took = time.perf_counter() - started
        resources = sum(len(v) for v in compiled.resources.values())
        log.info("compiled: group=%s objects=%d resources=%d seconds=%.4f", group, len(world.objects), resources,
                 took, extra={"node_group": group})
        span.set(resources=resources)
        if self.metrics is not None:
            self.metrics.compile_seconds.labels(group).observe(took)
        if group == GATEWAY:
            for what, since in compiling.items():
                self._unserved[what] = min(since, self._unserved.get(what, since))
            self.tracker.use(compiled.owners, compiled.resources)
            self.quarantine.compiled(effective)
            self._judged = False
            self.judge()


class _LoopHooks(Hooks):
    """xDS events the loop cares about: new node groups, and the gateway's ACK/NACKs."""

    def __init__(self, loop: ControlLoop) -> None:
        self._loop = loop

    def on_stream_open(self, stream: StreamInfo) -> None:
        self._loop.stream_opened(stream.node_group)

    def on_stream_close(self, stream: StreamInfo) -> None:
        self._loop.stream_closed(stream.node_group)

    def on_ack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
               latency_s: float) -> None:
        if stream.node_group == GATEWAY:
            self._accepted(type_url, resources)

    def on_resume(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str]) -> None:
        # (after a restart the gateway Envoys are sent nothing: what they say they hold is
        # their verdict, else every object would stay Programmed=Unknown)
        if stream.node_group == GATEWAY and resources:
            self._accepted(type_url, resources)

    def _accepted(self, type_url: str, resources: Mapping[str, str]) -> None:
        self._loop.tracker.ack(type_url, resources)
        self._loop.judge()
        self._loop.publish_status()

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, resources: Mapping[str, str],
                error_message: str) -> None:
        log.warning("envoy rejected config: node=%s type=%s error=%s", stream.node_id, type_url, error_message,
                    extra={"node": stream.node_id, "type_url": type_url})
        if stream.node_group == GATEWAY:
            self._loop.tracker.nack(type_url, resources, error_message)
            self._loop.judge()
            self._loop.publish_status()
