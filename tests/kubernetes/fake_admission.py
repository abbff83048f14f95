"""Admission webhooks for the fake API server, called the way kube-apiserver calls them.

On every create and update of a main resource (not a subresource), before the object is
stored:
1. each matching webhook of every MutatingWebhookConfiguration (configurations by name,
   webhooks in order) gets an AdmissionReview v1 and may answer a JSONPatch, applied to
   the object before the next webhook sees it;
2. each matching webhook of every ValidatingWebhookConfiguration gets the result; one
   denial refuses the write.

What kube-apiserver does and this fake does too:
- rules match on operation, API group, version and resource (`*` and `resource/*`
  wildcards, subresources as `plural/sub`), and `scope`;
- the call is HTTPS to `clientConfig.url`, or to `clientConfig.service` (which must
  exist as a Service object) with the server name `<service>.<namespace>.svc` checked
  against `caBundle` (empty: the system's roots, which a private CA is not in);
  `timeoutSeconds` (default 10) bounds it;
- a call that fails (connection, TLS, timeout, garbled answer) refuses the write with a
  500 `failed calling webhook` under `failurePolicy: Fail` (the v1 default) and is
  skipped under `Ignore`;
- a denial answers the webhook's `status.code` (403 if none) with the message
  `admission webhook "<name>" denied the request: <message>`.

Where a Service is served is the test's business, as kube-proxy's is a real cluster's:
`resolve(namespace, name, port)` gives the host and port to dial.
Not emulated: namespaceSelector, objectSelector, matchConditions, reinvocation, dry run.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from controller.kubernetes.resources import MUTATING_WEBHOOK, VALIDATING_WEBHOOK, ResourceType

Obj = dict[str, Any]
Resolve = Callable[[str, str, int], tuple[str, int]]


class Refused(Exception):
    """The write is refused: (code, reason, message) as the API server answers it."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    for part in parts[:-1]:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def _get(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    parent, last = _parent(doc, parts), parts[-1]
    return parent.pop(int(last)) if isinstance(parent, list) else parent.pop(last)


def _add(doc: Any, parts: list[str], value: Any) -> None:
    parent, last = _parent(doc, parts), parts[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        parent[last] = value


def apply_json_patch(doc: Obj, ops: list[Obj]) -> Obj:
    """RFC 6902 on a copy of `doc`."""
    out = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(op["path"])
        kind = op["op"]
        if kind == "add":
            _add(out, parts, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(out, parts)
        elif kind == "replace":
            _remove(out, parts)
            _add(out, parts, copy.deepcopy(op["value"]))
        elif kind == "move":
            _add(out, parts, _remove(out, _pointer(op["from"])))
        elif kind == "copy":
            _add(out, parts, copy.deepcopy(_get(out, _pointer(op["from"]))))
        elif kind == "test":
            if _get(out, parts) != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        else:
            raise ValueError(f"unknown JSON patch op {kind!r}")
    return out


def _matches(rule: Obj, rtype: ResourceType, subresource: str | None, operation: str) -> bool:
    def has(values: list[str] | None, value: str) -> bool:
        return "*" in (values or ()) or value in (values or ())

    if not has(rule.get("operations"), operation) or not has(rule.get("apiGroups"), rtype.group):
        return False
    if not has(rule.get("apiVersions"), rtype.version):
        return False
    scope = rule.get("scope", "*")
    if scope != "*" and scope != ("Namespaced" if rtype.namespaced else "Cluster"):
        return False
    wanted = rtype.plural if subresource is None else f"{rtype.plural}/{subresource}"
    for resource in rule.get("resources") or ():
        head, _, sub = resource.partition("/")
        if resource in ("*/*", wanted) or (resource == "*" and subresource is None):
            return True
        if sub == "*" and head in (rtype.plural, "*") and subresource is not None:
            return True
    return False


class Admission:
    def __init__(self, store: Callable[[ResourceType], list[Obj]], service_exists: Callable[[str, str], bool],
                 resolve: Resolve | None) -> None:
        self._store = store
        self._service_exists = service_exists
        self.resolve = resolve
        self.calls: list[tuple[str, str]] = []  # (webhook name, outcome) of every call, for tests

    async def admit(self, rtype: ResourceType, subresource: str | None, operation: str, obj: Obj,
                    old: Obj | None) -> Obj:
        """The object as mutated; raises Refused."""
        for rtype_config, mutating in ((MUTATING_WEBHOOK, True), (VALIDATING_WEBHOOK, False)):
            if rtype_config == rtype:
                continue  # kube-apiserver never calls webhooks for webhook configurations
            for config in sorted(self._store(rtype_config), key=lambda c: c["metadata"]["name"]):
                for hook in config.get("webhooks") or ():
                    if any(_matches(rule, rtype, subresource, operation) for rule in hook.get("rules") or ()):
                        obj = await self._call(hook, rtype, operation, obj, old, mutating)
        return obj

    def _review(self, rtype: ResourceType, operation: str, obj: Obj, old: Obj | None) -> Obj:
        meta = obj.get("metadata") or {}
        gvk = {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
        gvr = {"group": rtype.group, "version": rtype.version, "resource": rtype.plural}
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": meta.get("name", ""), "namespace": meta.get("namespace", "") if rtype.namespaced else "",
            "operation": operation, "userInfo": {"username": "fake-user"}, "object": obj, "oldObject": old,
            "dryRun": False, "options": None}}

    async def _call(self, hook: Obj, rtype: ResourceType, operation: str, obj: Obj, old: Obj | None,
                    mutating: bool) -> Obj:
        name = hook.get("name", "")
        policy = hook.get("failurePolicy", "Fail")
        try:
            answer = await self._post(hook, self._review(rtype, operation, obj, old))
            response = answer.get("response") if isinstance(answer, dict) else None
            if not isinstance(response, dict) or not isinstance(response.get("allowed"), bool):
                raise ValueError("the answer is not an AdmissionReview with response.allowed")
        except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError, ValueError) as err:
            self.calls.append((name, f"error: {err}"))
            if policy == "Ignore":
                return obj
            raise Refused(500, "InternalError",
                          f'Internal error occurred: failed calling webhook "{name}": {err}') from err
        if not response["allowed"]:
            status = response.get("status") or {}
            self.calls.append((name, "denied"))
            raise Refused(int(status.get("code") or 403), str(status.get("reason") or "Forbidden"),
                          f'admission webhook "{name}" denied the request: {status.get("message", "")}')
        self.calls.append((name, "allowed"))
        if mutating and response.get("patch"):
            if response.get("patchType") != "JSONPatch":
                raise Refused(500, "InternalError", f'webhook "{name}": unsupported patchType')
            try:
                return apply_json_patch(obj, json.loads(base64.b64decode(response["patch"])))
            except (ValueError, KeyError, IndexError, TypeError) as err:
                raise Refused(500, "InternalError",
                              f'Internal error occurred: webhook "{name}" returned a bad patch: {err}') from err
        return obj

    async def _post(self, hook: Obj, review: Obj) -> Any:
        config = hook.get("clientConfig") or {}
        bundle = config.get("caBundle")
        context = ssl.create_default_context()
        if bundle:
            context = ssl.create_default_context(cadata=base64.b64decode(bundle).decode())
        timeout = float(hook.get("timeoutSeconds", 10))
        if config.get("url"):
            url, server_name = str(config["url"]), None
        else:
            service = config.get("service") or {}
            namespace, svc_name = service.get("namespace", ""), service.get("name", "")
            port = int(service.get("port", 443))
            if not self._service_exists(namespace, svc_name):
                raise ValueError(f'service "{svc_name}" not found')
            if self.resolve is None:
                raise ValueError(f"no endpoints for service {namespace}/{svc_name}")
            host, target = self.resolve(namespace, svc_name, port)
            url = f"https://{host}:{target}{service.get('path', '/')}?timeout={int(timeout)}s"
            server_name = f"{svc_name}.{namespace}.svc"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.post(url, json=review, ssl=context, server_hostname=server_name) as resp:
                if resp.status != 200:
                    raise ValueError(f"the webhook answered HTTP {resp.status}")
                return await asyncio.wait_for(resp.json(content_type=None), timeout)
