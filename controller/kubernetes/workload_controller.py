"""Decides when to reconcile which ModelInfer: watches ModelInfers, Models,
AutoscalingPolicies and the Deployments, Services and HPAs it owns, and queues the
ModelInfer each change concerns (a Model change: every ModelInfer that references it; a
policy change: its target; a child's change: its owner, so status follows the rollout
and a child changed or deleted by hand is put back). The reconciler reads the children
and the ModelInfer from these caches (`reconciler.Children`), so reconciling what is
already right costs no API call.

One worker drains the queue; a key queued twice before it is handled is reconciled
once. The statuses of Models and AutoscalingPolicies (`registry_status`; a policy's
replica counts come from its HPA, which is watched for that) are recomputed from the
caches after any change to those kinds, ModelInfers or HPAs, and written when they
differ. A failed reconcile (API down, persistent conflict) is retried after a backoff
delay (injectable sleep), without blocking the other keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from controller.kubernetes.errors import ApiError
from controller.kubernetes.informer import CacheKey, Change, Handler, Informer, Sleep
from kit.backoff import Backoff
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.state import engine_view, parse_view, reread
from controller.kubernetes.reconciler import ABSENT, Cached, ModelInferReconciler, ReconcileResult
from controller.kubernetes.registry_status import model_status, model_users, policy_status
from controller.kubernetes.resources import (AUTOSCALING_POLICY, DEPLOYMENT, HPA, MODEL, MODEL_INFER, SERVICE,
                                             ResourceType)
from controller.kubernetes.status_writer import StatusWriter
from controller.kubernetes.workloads import INFER_LABEL, policy_for
from routing_engine.api.resources import AutoscalingPolicy, Model, ModelInfer, Resource

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, ModelInfer name)
T = TypeVar("T", bound=Resource)


class WorkloadController:
    def __init__(self, api: KubeApi, *, status: StatusWriter | None = None, namespace: str | None = None,
                 backoff: Backoff = Backoff(), sleep: Sleep = asyncio.sleep,
                 resync_period: float | None = 600.0, shared: Mapping[ResourceType, Informer] | None = None) -> None:
        """`shared`: running informers of ModelInfers, Models or AutoscalingPolicies (the
        provider's, over the same namespace) to subscribe to instead of listing and
        watching those kinds again; a leader taking over then starts from their caches."""
        self._status = status or StatusWriter(api)
        self._backoff = backoff
        self._sleep = sleep
        opts: dict[str, Any] = dict(namespace=namespace, resync_period=resync_period, sleep=sleep)
        self._handlers: dict[ResourceType, Handler] = {
            MODEL_INFER: self._on_infer, MODEL: self._on_model, AUTOSCALING_POLICY: self._on_policy}
        self._shared = {rtype: informer for rtype, informer in (shared or {}).items() if rtype in self._handlers}
        found = {rtype: self._shared.get(rtype) or Informer(api, rtype, handler, **opts)
                 for rtype, handler in self._handlers.items()}
        self.infers, self.models, self.policies = found[MODEL_INFER], found[MODEL], found[AUTOSCALING_POLICY]
        self.deployments = Informer(api, DEPLOYMENT, self._on_child, label_selector=INFER_LABEL, **opts)
        self.services = Informer(api, SERVICE, self._on_child, label_selector=INFER_LABEL, **opts)
        self.hpas = Informer(api, HPA, self._on_hpa, label_selector=INFER_LABEL, **opts)
        self._children = {informer.rtype: informer for informer in (self.deployments, self.services, self.hpas)}
        self._reconciler = ModelInferReconciler(api, self._status, self._cached_child)
        self._registry_dirty = asyncio.Event()
        self._valid_infers = ValidCache(ModelInfer)
        # Each ModelInfer's (uid, generation) as last seen: a change of spec moves it.
        self._infer_generations: dict[Key, tuple[str | None, int | None]] = {}
        self._users: tuple[int, dict[tuple[str, str], list[str]]] = (-1, {})  # (of generation, model_users)
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self.results: dict[Key, ReconcileResult] = {}  # last outcome per ModelInfer

    def enqueue(self, key: Key) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def _on_hpa(self, change: Change) -> None:
        self._registry_dirty.set()
        await self._on_child(change)

    def _cached_child(self, rtype: ResourceType, namespace: str, name: str) -> Cached:
        """A child as its informer holds it; ABSENT when the synced informer has none of
        ours (labelled) by that name."""
        informer = self._children[rtype]
        if not informer.synced.is_set():
            return None
        found = informer.get(namespace, name)
        return ABSENT if found is None else found

    async def _on_infer(self, change: Change) -> None:
        meta = change.object["metadata"]
        key = (meta.get("namespace", "default"), meta["name"])
        if change.type == "DELETED":  # children are garbage-collected through owner references
            self._infer_generations.pop(key, None)
            self._registry_dirty.set()
            return
        # Model and policy statuses follow ModelInfer specs; a status write (most events:
        # every reconcile writes one) keeps the generation, and recounting 10,000
        # ModelInfers for each made a first run over them quadratic.
        seen = (meta.get("uid"), meta.get("generation"))  # (a ModelInfer made again starts at 1)
        if seen[1] is None or self._infer_generations.get(key) != seen:
            self._registry_dirty.set()
        self._infer_generations[key] = seen
        self.enqueue(key)

    async def _on_model(self, change: Change) -> None:
        self._registry_dirty.set()
        meta = change.object["metadata"]
        for (ns, name), doc in self.infers.cache.items():
            ref = doc.get("spec", {}).get("modelRef") or {}
            if ref.get("name") == meta["name"] and (ref.get("namespace") or ns) == meta.get("namespace", "default"):
                self.enqueue((ns, name))

    async def _on_policy(self, change: Change) -> None:
        self._registry_dirty.set()
        target = change.object.get("spec", {}).get("targetRef") or {}
        if target.get("kind") == MODEL_INFER.kind and target.get("name"):
            self.enqueue((change.object["metadata"].get("namespace", "default"), target["name"]))

    async def _on_child(self, change: Change) -> None:
        meta = change.object["metadata"]
        for ref in meta.get("ownerReferences") or ():
            if ref.get("kind") == MODEL_INFER.kind and ref.get("controller"):
                self.enqueue((meta.get("namespace", "default"), ref["name"]))

    async def run(self) -> None:
        unsubscribe: list[Callable[[], None]] = []
        self._infer_generations.clear()  # a new term: what is cached is handed over again
        try:
            async with asyncio.TaskGroup() as group:
                informers = (self.infers, self.models, self.policies, self.deployments, self.services, self.hpas)
                for informer in informers:
                    if informer.rtype not in self._shared:
                        # Listed again (a former term's cache went stale): reconciles wait for it.
                        informer.synced.clear()
                        group.create_task(informer.run(), name=f"informer {informer.rtype}")
                for informer in informers:
                    await informer.synced.wait()
                for rtype, informer in self._shared.items():
                    unsubscribe.append(await informer.subscribe(self._handlers[rtype]))
                group.create_task(self._registry_loop(), name="model and policy status")
                while True:
                    key = await self._queue.get()
                    self._queued.discard(key)
                    try:
                        await self.reconcile(key)
                        self._failures.pop(key, None)
                    except ApiError as err:
                        failures = self._failures[key] = self._failures.get(key, 0) + 1
                        delay = self._backoff.delay(failures)
                        log.warning("reconcile failed; retrying", extra={
                            "resource": f"ModelInfer {key[0]}/{key[1]}", "error": str(err), "delay": delay})
                        group.create_task(self._retry_later(key, delay))
        finally:
            for stop in unsubscribe:
                stop()

    async def _retry_later(self, key: Key, delay: float) -> None:
        await self._sleep(delay)
        self.enqueue(key)

    async def reconcile(self, key: Key) -> ReconcileResult | None:
        """Reconcile one ModelInfer from the caches. An invalid ModelInfer is skipped (the
        provider reports it); an invalid Model or policy counts as absent."""
        infer = _valid(self.infers.get(*key), ModelInfer)
        if infer is None:
            return None
        ref = infer.spec.model_ref
        model = _valid(self.models.get(ref.namespace or key[0], ref.name), Model)
        policies = [p for (ns, _), doc in sorted(self.policies.cache.items()) if ns == key[0]
                    if (p := _valid(doc, AutoscalingPolicy)) is not None]
        result = await self._reconciler.reconcile(infer, model, policies, current=self.infers.get(*key))
        self.results[key] = result
        return result


    async def _registry_loop(self) -> None:
        while True:
            await self._registry_dirty.wait()
            self._registry_dirty.clear()
            try:
                await self.write_registry_statuses()
            except ApiError as err:
                log.warning("model/policy status not written; retrying", extra={"error": str(err)})
                await self._sleep(self._backoff.delay(1))
                self._registry_dirty.set()

    async def write_registry_statuses(self) -> int:
        """Write the Model and AutoscalingPolicy statuses that changed; how many were."""
        infers = self._valid_infers.valid(self.infers.cache)
        if self._users[0] != self._valid_infers.generation:
            self._users = (self._valid_infers.generation, model_users(infers))
        policies = [p for _, doc in sorted(self.policies.cache.items())
                    if (p := _valid(doc, AutoscalingPolicy)) is not None]
        written = 0
        for doc in list(self.models.cache.values()):
            model = _valid(doc, Model)
            if model is not None:  # an invalid one gets ValidationFailed from the provider's errors
                ns, name = model.metadata.namespace, model.metadata.name
                status = model_status(model, self._users[1].get((ns, name), ()))
                written += await self._status.write(MODEL, ns, name, status, current=doc)
        by_key = {(i.metadata.namespace, i.metadata.name): i for i in infers} if policies else {}
        for policy in policies:
            ref, ns = policy.spec.target_ref, policy.metadata.namespace
            infer = by_key.get((ns, ref.name)) if ref.kind == MODEL_INFER.kind else None
            winner = policy_for(infer, policies) if infer is not None else None
            status, extra = policy_status(policy, infer, winner, self.hpas.get(ns, ref.name))
            written += await self._status.write(AUTOSCALING_POLICY, ns, policy.metadata.name, status, extra=extra,
                                                current=self.policies.get(ns, policy.metadata.name))
        return written


class ValidCache(Generic[T]):
    """The valid models of an informer's objects, each read again only when its object
    changed (an informer caches a new dict for every event) and parsed again only when
    what the engine reads of it changed (not for a status write). Every ModelInfer
    status write is an event that makes the Model statuses be recomputed: parsing the
    10,000 ModelInfers of a large cluster each time kept the event loop busy ~0.5 s.
    `generation` changes when a model does, so what is derived from them can be kept."""

    def __init__(self, cls: type[T]) -> None:
        self._cls = cls
        self._memo: dict[CacheKey, tuple[Obj, str, T | None]] = {}
        self.generation = 0

    def valid(self, cache: Mapping[CacheKey, Obj]) -> list[T]:
        """The valid objects' models, in the cache's order (the memo keeps only these keys)."""
        memo: dict[CacheKey, tuple[Obj, str, T | None]] = {}
        changed = len(cache) != len(self._memo)
        for key, doc in cache.items():
            known = self._memo.get(key)
            if known is None or known[0] is not doc:
                text, parsed = reread(doc, known[1] if known is not None else None)
                if parsed is None and known is not None:  # a status write: the same model
                    known = (doc, text, known[2])
                else:
                    model = parsed[0] if parsed is not None else None
                    known = (doc, text, model if isinstance(model, self._cls) else None)
                    changed = True
            memo[key] = known
        self._memo = memo
        self.generation += changed
        return [parsed for _, _, parsed in memo.values() if parsed is not None]


def _valid(doc: Obj | None, cls: type[T]) -> T | None:
    if doc is None:
        return None
    parsed, _ = parse_view(engine_view(doc))
    return parsed if isinstance(parsed, cls) else None
