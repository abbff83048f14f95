"""Secrets, but only those a ModelServer references: TLS (`spec.tls.secretName`), JWKS
(`authentication.config.jwksSecretName`) and API keys (`authentication.config.secretName`),
always in the server's own namespace.

Why: watching every Secret of the cluster keeps service-account tokens, database
passwords and every other team's credentials in this process's memory and hands them to
the engine. Instead there is one Secret informer per namespace that has a referencing
ModelServer, and it keeps (caches, publishes) only the referenced names; other Secrets
of that namespace pass through the watch and are dropped at once. Types that can never
be a server's material (service-account tokens, Helm releases, registry credentials)
are filtered by the API server itself (field selector on `type`).

When the referenced names of a namespace change, its informer is restarted (one list),
so a newly referenced Secret is read at once. A namespace the control plane may not read
(RBAC bound per namespace, see deploy/README.md) fails its list, is retried with
backoff, and its servers stay Failed with "Secret not found": one team's reference never
holds up the others (`settled` waits for a first attempt, not for success).

RBAC cannot say "only referenced Secrets", so the ClusterRole still grants reading
Secrets; the `namespaced-secrets` overlay binds it per namespace instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from kit.tasks import cancel_and_wait, spawn
from controller.kubernetes.informer import Handler, Informer
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.resources import SECRET

# Secret types no ModelServer can use, left out by the API server.
NEVER_MATERIAL = ("kubernetes.io/service-account-token", "helm.sh/release.v1", "kubernetes.io/dockerconfigjson",
                  "kubernetes.io/dockercfg", "bootstrap.kubernetes.io/token")
FIELD_SELECTOR = ",".join(f"type!={t}" for t in NEVER_MATERIAL)


def _named(names: frozenset[str], obj: Obj) -> bool:
    """Whether a Secret is one of `names` (what the informer of its namespace keeps)."""
    return obj.get("metadata", {}).get("name") in names


def secret_refs(servers: Iterable[Obj]) -> dict[str, frozenset[str]]:
    """Namespace → names of the Secrets its ModelServers reference (raw objects, so an
    invalid server's Secret is read too and its error names the right problem)."""
    found: dict[str, set[str]] = {}
    for server in servers:
        meta, spec = server.get("metadata") or {}, server.get("spec") or {}
        names = set()
        tls = spec.get("tls")
        if isinstance(tls, dict) and isinstance(tls.get("secretName"), str):
            names.add(tls["secretName"])
        auth = spec.get("authentication")
        config: Any = auth.get("config") if isinstance(auth, dict) else None
        if isinstance(config, dict):
            names.update(v for k, v in config.items() if k in ("jwksSecretName", "secretName") and isinstance(v, str))
        if names:
            found.setdefault(str(meta.get("namespace") or "default"), set()).update(names)
    return {ns: frozenset(n) for ns, n in found.items()}


class ReferencedSecrets:
    def __init__(self, api: KubeApi, changed: Handler, *, watch_timeout: int = 300) -> None:
        self._api = api
        self._changed = changed
        self._watch_timeout = watch_timeout
        self._wanted: dict[str, frozenset[str]] = {}
        self._running: dict[str, tuple[Informer, asyncio.Task[None]]] = {}

    @property
    def wanted(self) -> Mapping[str, frozenset[str]]:
        return dict(self._wanted)

    def objects(self) -> list[Obj]:
        return [o for informer, _ in self._running.values() for o in informer.cache.values()]

    async def want(self, refs: Mapping[str, frozenset[str]]) -> bool:
        """Watch exactly these references from now on; True when something changed (a
        namespace started, stopped or restarted)."""
        changed = False
        for namespace in sorted(set(self._running) - set(refs)):
            await self._stop(namespace)
            changed = True
        for namespace, names in sorted(refs.items()):
            if self._wanted.get(namespace) == names:
                continue
            await self._stop(namespace)
            informer = Informer(self._api, SECRET, self._changed, namespace=namespace, field_selector=FIELD_SELECTOR,
                                keep=partial(_named, names),
                                resync_period=None, watch_timeout=self._watch_timeout)
            self._running[namespace] = (informer, spawn(informer.run(), name=f"secrets in {namespace}"))
            self._wanted[namespace] = names
            changed = True
        return changed

    async def settled(self) -> None:
        """Until every namespace watched has listed once (or failed to)."""
        await asyncio.gather(*(informer.attempted.wait() for informer, _ in self._running.values()))

    async def _stop(self, namespace: str) -> None:
        running = self._running.pop(namespace, None)
        self._wanted.pop(namespace, None)
        if running is not None:
            await cancel_and_wait(running[1])

    async def close(self) -> None:
        for namespace in list(self._running):
            await self._stop(namespace)
