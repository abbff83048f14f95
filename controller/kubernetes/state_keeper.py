"""The Kubernetes provider's state kept per object, so that a change costs what changed.

`state.build_state` (the definition) views, serializes and validates or looks up every
object, sorts them all and regroups every EndpointSlice. At 10,000 ModelRoutes that was
~0.5 s per change on the event loop (every xDS stream and watch waited meanwhile), and a
`kubectl apply` took 1.5–4 s to be served where the control loop alone takes ~20 ms.

The keeper is told which objects changed (the informers' events: every change exactly
once, in order) and re-reads only those; an edit that keeps an object's key moves it in
place, so its neighbours keep their positions and the state's parts (consecutive pieces
of `PART_SIZE` objects, the very same tuple while unchanged) tell the application which
ones to look at again (`controller.provider.PartsFilter`). `state()` equals
`build_state` over the same caches (`tests/kubernetes/test_state_keeper.py`, random
change sequences), with the errors ordered by their object's kind, namespace and name.

Secrets come and go with their informers (a namespace's informer restarts when its
references change, and its cache leaves without events), so they are compared whole at
each `state()`: there are only as many as ModelServers reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import chain
from types import MappingProxyType

from controller.kubernetes.informer import CacheKey, cache_key
from controller.kubernetes.interface import Obj
from controller.kubernetes.resources import ENDPOINT_SLICE, MODEL_INFER, MODEL_SERVER, SECRET
from controller.kubernetes.secrets import secret_refs
from controller.kubernetes.state import ServiceKey, merged_endpoints, reread, service_of
from controller.provider import Endpoints, ProviderState
from routing_engine.api.errors import ManifestError
from routing_engine.api.resources import ObjectKey, Resource
from routing_engine.world import BackendEndpoint

PART_SIZE = 256  # objects per part: an edit makes the application re-read this many

Source = tuple[str, CacheKey]  # (kind of the informer, the object's key in its cache)


@dataclass(frozen=True, slots=True)
class _Record:
    """One object as last read: its engine view's text, and its model (None: invalid)."""

    text: str
    obj: Resource | None


class StateKeeper:
    def __init__(self) -> None:
        self._records: dict[Source, _Record] = {}
        self._dirty: set[Source] = set()
        self._secrets: dict[CacheKey, Obj] = {}  # the Secrets of the last state, as read
        # The valid objects: by key, and (until the keys change) in key order, cut in parts.
        self._by_key: dict[ObjectKey, Resource] = {}
        self._order: list[ObjectKey] | None = None
        self._position: dict[ObjectKey, int] = {}
        self._parts: list[tuple[Resource, ...]] = []
        self._stale_parts: set[int] = set()
        self._errors: dict[Source, tuple[ManifestError, ...]] = {}
        # Endpoints: each slice's Service, each Service's slices, and the merged endpoints of
        # every ModelInfer that has a slice.
        self._slice_service: dict[CacheKey, ServiceKey | None] = {}
        self._service_slices: dict[ServiceKey, dict[CacheKey, Obj]] = {}
        self._dirty_services: set[ServiceKey] = set()
        self._endpoints: dict[ObjectKey, tuple[BackendEndpoint, ...]] = {}
        self._endpoints_view: Endpoints = MappingProxyType({})
        self._unsorted = False  # `_endpoints` holds a key out of order (sorted before handed out)
        # Secret references per ModelServer, and all of them (None: to be gathered again).
        self._server_refs: dict[CacheKey, dict[str, frozenset[str]]] = {}
        self._refs: dict[str, frozenset[str]] | None = {}
        self._last: ProviderState | None = None  # the last state, while nothing was modified since
        self._modified = False

    def changed(self, kind: str, key: CacheKey) -> None:
        """An informer's object changed (added, modified or deleted): read it again."""
        self._dirty.add((kind, key))

    def refresh(self, caches: Mapping[str, Mapping[CacheKey, Obj]]) -> None:
        """Read what changed since the last call from the informers' caches (kind → cache;
        EndpointSlices under their kind too)."""
        dirty, self._dirty = self._dirty, set()
        for kind, key in sorted(dirty):
            cache = caches.get(kind)
            self._read(kind, key, None if cache is None else cache.get(key))

    def secret_refs(self) -> dict[str, frozenset[str]]:
        """The Secrets the ModelServers reference, by namespace (`secrets.secret_refs`)."""
        if self._refs is None:
            gathered: dict[str, set[str]] = {}
            for refs in self._server_refs.values():
                for namespace, names in refs.items():
                    gathered.setdefault(namespace, set()).update(names)
            self._refs = {ns: frozenset(names) for ns, names in gathered.items()}
        return dict(self._refs)

    def state(self, caches: Mapping[str, Mapping[CacheKey, Obj]], secrets: Iterable[Obj]) -> ProviderState:
        """The state of the caches now, with these Secrets."""
        self.refresh(caches)
        self._compare_secrets(secrets)
        changed = [service for service in self._dirty_services if self._merge_endpoints(service)]
        self._dirty_services.clear()
        if changed:
            if self._unsorted:  # a ModelInfer's first endpoints, not last in key order
                self._endpoints, self._unsorted = dict(sorted(self._endpoints.items())), False
            self._endpoints_view = MappingProxyType(dict(self._endpoints))
            self._modified = True
        if self._last is None or self._modified:
            errors = tuple(chain.from_iterable(self._errors[s] for s in sorted(self._errors)))
            self._last = ProviderState.of_parts(self._current_parts(), endpoints=self._endpoints_view, errors=errors)
            self._modified = False
        return self._last

    # --- reading one object ------------------------------------------------------------

    def _read(self, kind: str, key: CacheKey, doc: Obj | None) -> None:
        if kind == ENDPOINT_SLICE.kind:
            self._read_slice(key, doc)
            return
        source = (kind, key)
        if kind == MODEL_SERVER.kind:
            self._note_refs(key, doc)
        old = self._records.get(source)
        if doc is None:
            if old is not None:
                del self._records[source]
                self._replace(source, old.obj, None, ())
            return
        text, parsed = reread(doc, old.text if old is not None else None)
        if parsed is None:
            return  # a status write or a re-list: the very same model object stays
        obj, problems = parsed
        self._records[source] = _Record(text, obj)
        self._replace(source, old.obj if old is not None else None, obj, tuple(problems))

    def _replace(self, source: Source, old: Resource | None, new: Resource | None,
                 errors: tuple[ManifestError, ...]) -> None:
        self._modified = True
        if errors:
            self._errors[source] = errors
        else:
            self._errors.pop(source, None)
        if old is not None and (new is None or new.key != old.key):
            del self._by_key[old.key]
            self._order = None
            self._touch_infer(old)
        if new is None:
            return
        if new.key not in self._by_key:
            self._order = None
        elif self._order is not None:
            self._stale_parts.add(self._position[new.key] // PART_SIZE)
        self._by_key[new.key] = new
        self._touch_infer(new)

    def _touch_infer(self, obj: Resource) -> None:
        """A ModelInfer that comes, goes or changes: its endpoints are known again."""
        if obj.KIND == MODEL_INFER.kind:
            self._dirty_services.add((obj.key.namespace, obj.key.name))

    def _note_refs(self, key: CacheKey, doc: Obj | None) -> None:
        refs = secret_refs([doc]) if doc is not None else {}
        if refs != self._server_refs.get(key, {}):
            self._refs = None
        if refs:
            self._server_refs[key] = refs
        else:
            self._server_refs.pop(key, None)

    def _compare_secrets(self, secrets: Iterable[Obj]) -> None:
        now = {cache_key(s): s for s in secrets}
        for key in self._secrets.keys() - now.keys():
            self._read(SECRET.kind, key, None)
        for key, doc in now.items():
            if self._secrets.get(key) is not doc:
                self._read(SECRET.kind, key, doc)
        self._secrets = now

    # --- endpoints ---------------------------------------------------------------------

    def _read_slice(self, key: CacheKey, doc: Obj | None) -> None:
        old = self._slice_service.pop(key, None)
        if old is not None:
            self._service_slices[old].pop(key, None)
            if not self._service_slices[old]:
                del self._service_slices[old]
            self._dirty_services.add(old)
        if doc is None:
            return
        service = service_of(doc)
        self._slice_service[key] = service
        if service is not None:
            self._service_slices.setdefault(service, {})[key] = doc
            self._dirty_services.add(service)

    def _merge_endpoints(self, service: ServiceKey) -> bool:
        """Whether the endpoints of this ModelInfer changed."""
        infer = ObjectKey(MODEL_INFER.kind, *service)
        slices = self._service_slices.get(service)
        old = self._endpoints.get(infer)
        if not slices or infer not in self._by_key:
            return self._endpoints.pop(infer, None) is not None
        new = merged_endpoints(slices.values())
        if new == old:
            return False
        last = next(reversed(self._endpoints), None)
        self._endpoints[infer] = new
        self._unsorted = self._unsorted or (old is None and last is not None and infer < last)
        return True

    # --- the objects in order ----------------------------------------------------------

    def _current_parts(self) -> list[tuple[Resource, ...]]:
        if self._order is None:
            self._order = sorted(self._by_key)
            self._position = {key: n for n, key in enumerate(self._order)}
            self._stale_parts = set(range((len(self._order) + PART_SIZE - 1) // PART_SIZE))
            self._parts = [()] * len(self._stale_parts)
        for n in self._stale_parts:
            self._parts[n] = tuple(self._by_key[k] for k in self._order[n * PART_SIZE:(n + 1) * PART_SIZE])
        self._stale_parts.clear()
        return self._parts
