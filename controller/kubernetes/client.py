"""The one adapter to the Kubernetes API server: REST over aiohttp, credentials from
kubeconfig (or the in-cluster service account) through the `kubernetes` package.

Why raw HTTP rather than the official client's API classes: its watch is a synchronous
generator on a urllib3 connection, so every watch would need a thread that cannot be
cancelled cleanly, and its typed models would be turned straight back into dicts. The
REST surface a controller needs is small (list, watch, get, create, replace, merge
patch, status, delete) and an asyncio stream is cancelled with its task. The
`kubernetes` package is still used for what it does well: reading kubeconfig contexts,
exec/token plugins and in-cluster configuration.

Every non-2xx answer becomes a typed error from `errors` (Conflict, Gone, NotFound, ...);
a watch's ERROR event with code 410 raises Gone from the iterator, so the informer
re-lists.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from controller.kubernetes.errors import ApiError, ConfigError, error_for
from controller.kubernetes.interface import Obj, ObjectList, WatchEvent, name_of, namespace_of
from controller.kubernetes.resources import ResourceType

TokenSource = Callable[[], str | None]
_MERGE_PATCH = "application/merge-patch+json"
_WATCH_EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK")


class KubeClient:
    """An asyncio client for one API server. Use as `async with KubeClient(url) as api`."""

    def __init__(self, server: str, *, token: str | None = None, token_source: TokenSource | None = None,
                 ssl_context: ssl.SSLContext | None = None, request_timeout: float = 30.0) -> None:
        """`token_source` (called before each request) is for credentials that rotate:
        exec plugins, OIDC, bound service-account tokens; `token` is a fixed one."""
        self._server = server.rstrip("/")
        self._token_source: TokenSource = token_source or (lambda: token)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, *, context: str | None = None,
                        refresh_every: float = 60.0) -> KubeClient:
        """Credentials from `path` (default: $KUBECONFIG, ~/.kube/config) or, inside a pod,
        from the service account. Rotating credentials are refreshed through the
        `kubernetes` package's hook at most every `refresh_every` seconds."""
        from kubernetes import config as kube_config
        from kubernetes.client import Configuration

        cfg = Configuration()
        # kubernetes.config's loaders are unannotated (the package's py.typed notwithstanding).
        try:
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, context=context, client_configuration=cfg)
        except kube_config.ConfigException as outside:
            try:
                kube_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except kube_config.ConfigException as inside:
                where = path or "$KUBECONFIG or ~/.kube/config"
                raise ConfigError(f"no Kubernetes credentials: kubeconfig {where}: {outside}; "
                                  f"in-cluster: {inside}") from None
        ctx: ssl.SSLContext | None = None
        if cfg.host.startswith("https"):
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.verify_ssl else ssl._create_unverified_context()
            if cfg.cert_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        refreshed = [time.monotonic()]

        def token() -> str | None:
            hook = cfg.refresh_api_key_hook
            if hook is not None and time.monotonic() - refreshed[0] >= refresh_every:
                refreshed[0] = time.monotonic()
                hook(cfg)
            auth = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken") or ""
            return str(auth).removeprefix("Bearer ").strip() or None

        return cls(cfg.host, token_source=token, ssl_context=ctx)

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"Accept": "application/json"})
        return self._session

    def _auth(self) -> dict[str, str]:
        token = self._token_source()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _request(self, method: str, path: str, *, body: Obj | None = None,
                       params: dict[str, str] | None = None, content_type: str = "application/json") -> Obj:
        data = json.dumps(body).encode() if body is not None else None
        try:
            async with self._http().request(method, self._server + path, data=data, params=params,
                                            headers={"Content-Type": content_type, **self._auth()}, ssl=self._ssl,
                                            timeout=self._timeout) as resp:
                payload = await resp.read()
                if resp.status >= 300:
                    raise _status_error(resp.status, payload)
                result: Obj = json.loads(payload) if payload else {}
                return result
        except aiohttp.ClientError as err:
            raise ApiError(0, "ConnectionError", f"{method} {path}: {err}") from err

    # --- reads ------------------------------------------------------------------------

    async def list(self, rtype: ResourceType, *, namespace: str | None = None,
                   label_selector: str | None = None, field_selector: str | None = None) -> ObjectList:
        params = _selectors(label_selector, field_selector)
        body = await self._request("GET", rtype.path(namespace), params=params or None)
        items = tuple(_with_type(rtype, item) for item in body.get("items") or ())
        return ObjectList(items, str(body.get("metadata", {}).get("resourceVersion", "")))

    async def watch(self, rtype: ResourceType, *, resource_version: str, namespace: str | None = None,
                    label_selector: str | None = None, field_selector: str | None = None,
                    timeout_seconds: int | None = None) -> AsyncIterator[WatchEvent]:
        """Events after `resource_version` until the server ends the stream. Raises Gone
        when the server no longer has that version."""
        params = {"watch": "1", "allowWatchBookmarks": "true", "resourceVersion": resource_version,
                  **_selectors(label_selector, field_selector)}
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        read_timeout = (timeout_seconds + 30.0) if timeout_seconds is not None else None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total, sock_read=read_timeout)
        try:
            async with self._http().get(self._server + rtype.path(namespace), params=params, ssl=self._ssl,
                                        headers=self._auth(), timeout=timeout) as resp:
                if resp.status >= 300:
                    raise _status_error(resp.status, await resp.read())
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = event.get("type")
                    if kind == "ERROR":
                        status = event.get("object") or {}
                        raise error_for(int(status.get("code", 500)), str(status.get("reason", "")),
                                        str(status.get("message", "")))
                    if kind in _WATCH_EVENT_TYPES:
                        yield WatchEvent(kind, _with_type(rtype, event.get("object") or {}))
        except aiohttp.ClientError as err:
            raise ApiError(0, "ConnectionError", f"watch {rtype}: {err}") from err

    async def get(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        return _with_type(rtype, await self._request("GET", rtype.path(namespace, name)))

    # --- writes -----------------------------------------------------------------------

    async def create(self, rtype: ResourceType, obj: Obj) -> Obj:
        return await self._request("POST", rtype.path(namespace_of(obj)), body=_with_type(rtype, obj))

    async def replace(self, rtype: ResourceType, obj: Obj) -> Obj:
        """PUT; a `metadata.resourceVersion` in `obj` makes it conditional (Conflict if stale)."""
        return await self._request("PUT", rtype.path(namespace_of(obj), name_of(obj)), body=_with_type(rtype, obj))

    async def patch(self, rtype: ResourceType, namespace: str, name: str, patch: Obj) -> Obj:
        """JSON merge patch (RFC 7386): works for CRDs and built-ins alike."""
        return await self._request("PATCH", rtype.path(namespace, name), body=patch, content_type=_MERGE_PATCH)

    async def replace_status(self, rtype: ResourceType, obj: Obj) -> Obj:
        return await self._request("PUT", rtype.path(namespace_of(obj), name_of(obj), "status"),
                                   body=_with_type(rtype, obj))

    async def patch_status(self, rtype: ResourceType, namespace: str, name: str, patch: Obj) -> Obj:
        return await self._request("PATCH", rtype.path(namespace, name, "status"), body=patch,
                                   content_type=_MERGE_PATCH)

    async def delete(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        return await self._request("DELETE", rtype.path(namespace, name))


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params


def context_namespace(path: str | None = None, context: str | None = None) -> str:
    """The namespace of the kubeconfig's context (`context`, else the current one), as
    kubectl uses it when a command names none: "default" when it sets none (or there is
    no kubeconfig, as inside a pod)."""
    from kubernetes import config as kube_config

    try:
        contexts, current = kube_config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
    except (kube_config.ConfigException, OSError, TypeError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def _with_type(rtype: ResourceType, obj: Obj) -> Obj:
    """List items come without apiVersion/kind; the rest of the controller needs them."""
    if obj.get("apiVersion") == rtype.api_version and obj.get("kind") == rtype.kind:
        return obj
    return {**obj, "apiVersion": rtype.api_version, "kind": rtype.kind}


def _status_error(code: int, payload: bytes) -> ApiError:
    reason, message = "", payload[:200].decode(errors="replace")
    try:
        status: Any = json.loads(payload)
        if isinstance(status, dict):
            reason, message = str(status.get("reason", "")), str(status.get("message", message))
    except ValueError:
        pass
    return error_for(code, reason, message)
