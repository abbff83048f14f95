"""The admission webhook's certificate, issued and rotated by the control plane itself,
so an install needs no cert-manager (it stays an option: `serve --webhook-cert-dir`).

    leader:        Secret <ns>/<secret>  ◄── CA + serving certificate (pki)
                   webhook configurations' caBundle ◄── the CAs in that Secret
    every replica: Secret ──watch──► the webhook server's TLS context (reloaded live)

The Secret (`kubernetes.io/tls`) holds `tls.crt`/`tls.key` (the serving certificate for
the webhook Service's DNS names), `ca.crt` (every CA the webhooks must trust, the current
one first) and `ca.key`. Only the leader writes it; every replica serves what it holds,
so all replicas present a certificate of one CA.

Renewal never breaks a call in flight, because of the order of steps (`reconcile`):
1. a CA close to expiry is replaced, and the new CA joins `ca.crt` next to the old one
   (which stays until it expires);
2. the `caBundle` of every webhook pointing at the Service is set to `ca.crt`;
3. only then, and only if step 2 succeeded for every configuration, a serving
   certificate that is due, names the wrong hosts, or was signed by an older CA is
   re-issued by the current CA.
The API server thus trusts the new CA before any replica presents a certificate it
signed. The leader re-checks every `check_every` seconds, which also repairs a
`caBundle` that an apply of the install emptied. Until the first `caBundle` is written
(seconds after the first leader starts) the API server cannot call the webhook, and
with `failurePolicy: Fail` writes of the MatrixInfer kinds are refused meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from controller.certs import pki
from controller.kubernetes.errors import ApiError, Conflict, NotFound
from controller.kubernetes.informer import Change, Informer, Sleep
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.resources import MUTATING_WEBHOOK, SECRET, VALIDATING_WEBHOOK
from controller.kubernetes.status_writer import Clock, utc_now

log = logging.getLogger(__name__)

MANAGED_BY = {"app.kubernetes.io/managed-by": "modelroute"}


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """What the certificate is for (the webhook Service) and where it goes."""

    namespace: str  # the control plane's namespace: the Service and the Secret live here
    service: str = "modelroute-webhook"
    secret: str = "modelroute-webhook-cert"
    # Validating and mutating configurations whose webhooks call the Service (by name;
    # each name is looked up as both kinds).
    configurations: tuple[str, ...] = ("modelroute-validate", "modelroute-defaults")

    def dns_names(self) -> tuple[str, ...]:
        """What the API server checks (`<service>.<namespace>.svc`) first, then the other
        names a client in the cluster may use."""
        svc, ns = self.service, self.namespace
        return (f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local", f"{svc}.{ns}", svc)


@dataclass(frozen=True, slots=True)
class CertState:
    ca: pki.KeyPair
    trusted: tuple[bytes, ...]  # CA certificates the webhooks trust, the current CA first
    serving: pki.KeyPair


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def state_of(secret: Obj | None) -> CertState | None:
    """The state a Secret holds; None when absent, incomplete or unusable."""
    data = (secret or {}).get("data") or {}
    try:
        raw = {k: base64.b64decode(data[k]) for k in ("tls.crt", "tls.key", "ca.crt", "ca.key")}
        trusted = tuple(pki.split_bundle(raw["ca.crt"]))
        state = CertState(pki.KeyPair(trusted[0], raw["ca.key"]), trusted, pki.KeyPair(raw["tls.crt"], raw["tls.key"]))
        if not (pki.matches(state.ca) and pki.matches(state.serving)):
            return None
    except (KeyError, IndexError, ValueError):
        return None
    return state


def secret_of(target: WebhookTarget, state: CertState) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": target.secret, "namespace": target.namespace, "labels": dict(MANAGED_BY)},
            "data": {"tls.crt": _b64(state.serving.cert_pem), "tls.key": _b64(state.serving.key_pem),
                     "ca.crt": _b64(pki.join_bundle(state.trusted)), "ca.key": _b64(state.ca.key_pem)}}


def serving_pair(secret: Obj) -> pki.KeyPair | None:
    """The serving certificate of a Secret, if it holds a usable one."""
    data = secret.get("data") or {}
    try:
        pair = pki.KeyPair(base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"]))
        return pair if pki.matches(pair) else None
    except (KeyError, ValueError):
        return None


class WebhookCertificates:
    def __init__(self, api: KubeApi, target: WebhookTarget, *, clock: Clock = utc_now,
                 check_every: float = 60.0) -> None:
        self._api = api
        self.target = target
        self._clock = clock
        self.check_every = check_every

    # --- the leader ---------------------------------------------------------------------

    async def reconcile(self) -> CertState:
        """One round of the steps in the module docstring; returns what the Secret holds."""
        now = self._clock()
        try:
            current: Obj | None = await self._api.get(SECRET, self.target.namespace, self.target.secret)
        except NotFound:
            current = None
        state = state_of(current)
        if state is None:
            if current is not None:
                log.warning("webhook certificate Secret unusable, issuing a new CA",
                            extra={"resource": f"Secret {self.target.namespace}/{self.target.secret}"})
            ca = pki.new_ca("modelroute-webhook-ca", now=now)
            state = CertState(ca, (ca.cert_pem,), pki.new_serving(ca, self.target.dns_names(), now=now))
        else:
            ca = state.ca
            if pki.due(ca.cert_pem, now=now):
                ca = pki.new_ca("modelroute-webhook-ca", now=now)
                log.info("webhook CA rotated; the old one stays trusted until it expires",
                         extra={"resource": f"Secret {self.target.namespace}/{self.target.secret}"})
            trusted = (ca.cert_pem, *(c for c in state.trusted if c != ca.cert_pem and not pki.expired(c, now=now)))
            state = replace(state, ca=ca, trusted=trusted)
        current = await self._write(current, state)
        if not await self._publish_bundle(state.trusted):
            return state  # step 3 waits until every webhook trusts the CA
        serving = state.serving
        if (pki.due(serving.cert_pem, now=now) or not pki.signed_by(serving.cert_pem, state.ca.cert_pem)
                or not set(self.target.dns_names()) <= pki.names(serving.cert_pem)):
            state = replace(state, serving=pki.new_serving(state.ca, self.target.dns_names(), now=now))
            await self._write(current, state)
            log.info("webhook serving certificate issued",
                     extra={"resource": f"Secret {self.target.namespace}/{self.target.secret}"})
        return state

    async def _write(self, current: Obj | None, state: CertState) -> Obj:
        desired = secret_of(self.target, state)
        if current is None:
            return await self._api.create(SECRET, desired)
        if current.get("data") == desired["data"] and current.get("type") == desired["type"]:
            return current
        desired["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return await self._api.replace(SECRET, desired)

    async def _publish_bundle(self, trusted: tuple[bytes, ...]) -> bool:
        """Set `caBundle` on every webhook calling the Service; True if all of them now
        trust every CA in `trusted`."""
        bundle = _b64(pki.join_bundle(trusted))
        ok = True
        for name in self.target.configurations:
            for rtype in (VALIDATING_WEBHOOK, MUTATING_WEBHOOK):
                try:
                    config = await self._api.get(rtype, "", name)
                except NotFound:
                    continue
                hooks = [h for h in config.get("webhooks") or () if self._calls_us(h)]
                if all(h.get("clientConfig", {}).get("caBundle") == bundle for h in hooks):
                    continue
                for hook in hooks:
                    hook.setdefault("clientConfig", {})["caBundle"] = bundle
                try:
                    await self._api.replace(rtype, config)  # carries its resourceVersion: Conflict if stale
                    log.info("webhook caBundle written", extra={"resource": f"{rtype.kind} {name}",
                                                                "cas": len(trusted)})
                except Conflict:
                    ok = False
        return ok

    def _calls_us(self, hook: Obj) -> bool:
        service = (hook.get("clientConfig") or {}).get("service") or {}
        return (service.get("namespace"), service.get("name")) == (self.target.namespace, self.target.service)

    async def lead(self, sleep: Sleep = asyncio.sleep) -> None:
        """Reconcile now and every `check_every` seconds, while leading. An API error
        (a Conflict or AlreadyExists from a leader change included) waits for the next round."""
        while True:
            try:
                await self.reconcile()
            except ApiError as err:
                log.warning("webhook certificate not reconciled; retrying",
                            extra={"resource": f"Secret {self.target.namespace}/{self.target.secret}",
                                   "error": str(err)})
            await sleep(self.check_every)

    # --- every replica ------------------------------------------------------------------

    def follower(self, on_certificate: Callable[[pki.KeyPair], object]) -> Informer:
        """An informer on the Secret alone that hands each usable serving certificate to
        `on_certificate` (run it with `.run()`)."""

        async def changed(change: Change) -> None:
            if change.type == "DELETED":
                return  # keep serving the last certificate; the leader writes a new one
            pair = serving_pair(change.object)
            if pair is not None:
                on_certificate(pair)

        return Informer(self._api, SECRET, changed, namespace=self.target.namespace,
                        field_selector=f"metadata.name={self.target.secret}", resync_period=None)

