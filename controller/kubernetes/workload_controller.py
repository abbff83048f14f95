"""Decides when to reconcile which ModelInfer: watches ModelInfers, Models,
AutoscalingPolicies and the Deployments it owns, and queues the ModelInfer each change
concerns (a Model change: every ModelInfer that references it; a policy change: its
target; a Deployment change: its owner, so status follows the rollout).

One worker drains the queue; a key queued twice before it is handled is reconciled
once. A failed reconcile (API down, persistent conflict) is retried after a backoff
delay (injectable sleep), without blocking the other keys.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

from controller.kubernetes.errors import ApiError
from controller.kubernetes.informer import Backoff, Change, Informer, Sleep
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.provider import engine_view
from controller.kubernetes.reconciler import ModelInferReconciler, ReconcileResult
from controller.kubernetes.resources import AUTOSCALING_POLICY, DEPLOYMENT, MODEL, MODEL_INFER
from controller.kubernetes.status_writer import StatusWriter
from controller.kubernetes.workloads import INFER_LABEL
from routing_engine.api.loader import parse_document
from routing_engine.api.resources import AutoscalingPolicy, Model, ModelInfer, Resource

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, ModelInfer name)
T = TypeVar("T", bound=Resource)


class WorkloadController:
    def __init__(self, api: KubeApi, *, status: StatusWriter | None = None, namespace: str | None = None,
                 backoff: Backoff = Backoff(), sleep: Sleep = asyncio.sleep,
                 resync_period: float | None = 600.0) -> None:
        self._reconciler = ModelInferReconciler(api, status or StatusWriter(api))
        self._backoff = backoff
        self._sleep = sleep
        opts = dict(namespace=namespace, resync_period=resync_period, sleep=sleep)
        self.infers = Informer(api, MODEL_INFER, self._on_infer, **opts)  # type: ignore[arg-type]
        self.models = Informer(api, MODEL, self._on_model, **opts)  # type: ignore[arg-type]
        self.policies = Informer(api, AUTOSCALING_POLICY, self._on_policy, **opts)  # type: ignore[arg-type]
        self.deployments = Informer(api, DEPLOYMENT, self._on_deployment, label_selector=INFER_LABEL,
                                    **opts)  # type: ignore[arg-type]
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self.results: dict[Key, ReconcileResult] = {}  # last outcome per ModelInfer

    def enqueue(self, key: Key) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def _on_infer(self, change: Change) -> None:
        if change.type != "DELETED":  # children are garbage-collected through owner references
            meta = change.object["metadata"]
            self.enqueue((meta.get("namespace", "default"), meta["name"]))

    async def _on_model(self, change: Change) -> None:
        meta = change.object["metadata"]
        for (ns, name), doc in self.infers.cache.items():
            ref = doc.get("spec", {}).get("modelRef") or {}
            if ref.get("name") == meta["name"] and (ref.get("namespace") or ns) == meta.get("namespace", "default"):
                self.enqueue((ns, name))

    async def _on_policy(self, change: Change) -> None:
        target = change.object.get("spec", {}).get("targetRef") or {}
        if target.get("kind") == MODEL_INFER.kind and target.get("name"):
            self.enqueue((change.object["metadata"].get("namespace", "default"), target["name"]))

    async def _on_deployment(self, change: Change) -> None:
        meta = change.object["metadata"]
        for ref in meta.get("ownerReferences") or ():
            if ref.get("kind") == MODEL_INFER.kind and ref.get("controller"):
                self.enqueue((meta.get("namespace", "default"), ref["name"]))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for informer in (self.infers, self.models, self.policies, self.deployments):
                group.create_task(informer.run(), name=f"informer {informer.rtype}")
            for informer in (self.infers, self.models, self.policies, self.deployments):
                await informer.synced.wait()
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
        result = await self._reconciler.reconcile(infer, model, policies)
        self.results[key] = result
        return result


def _valid(doc: Obj | None, cls: type[T]) -> T | None:
    if doc is None:
        return None
    parsed, _ = parse_document(engine_view(doc), source="kubernetes", index=1)
    return parsed if isinstance(parsed, cls) else None
