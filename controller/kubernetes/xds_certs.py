"""mTLS between the gateways and the control plane (xDS, rate limits, stats), issued and
rotated by the control plane itself, like the webhook certificate (`webhook_certs`).

    leader:        Secret <ns>/modelroute-xds-ca       ◄── CA(s): ca.crt (bundle), ca.key
                   Secret <ns>/modelroute-gateway-xds  ◄── the gateways' client certificate
                                                          (SPIFFE ID `…/gateway`) and ca.crt
    every replica: CA Secret ──watch──► its own serving certificate (signed in memory) for
                   the xDS/rate-limit gRPC ports and the stats listener (`on_material`)
    gateways:      mount modelroute-gateway-xds; Envoy reads it through file-based SDS
                   with a watched directory, so a renewed certificate is picked up live

Renewal never breaks a connection in flight: certificates are renewed when a third of
their lifetime is left, and a new CA (once every several years) is first only *trusted*
(added to every bundle: the replicas' client CA list and the gateways' ca.crt) and signs
nothing until it has been trusted for `propagation` (the kubelet takes up to a minute or
two to update a mounted Secret); then it signs, and the old CA stays trusted until it
expires. Identities and what they may receive: `xds_server.identity`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass

from controller.certs import pki
from controller.kubernetes.errors import ApiError, NotFound
from controller.kubernetes.informer import Change, Informer, Sleep
from controller.kubernetes.interface import KubeApi, Obj
from controller.kubernetes.resources import SECRET
from controller.kubernetes.status_writer import Clock, utc_now
from controller.kubernetes.webhook_certs import MANAGED_BY
from xds_server.identity import GATEWAY_IDENTITY
from xds_server.tls import TlsMaterial

log = logging.getLogger(__name__)

CA_SECRET = "modelroute-xds-ca"
GATEWAY_SECRET = "modelroute-gateway-xds"
PENDING_SINCE = "modelroute.matrixinfer.ai/pending-ca-since"


def server_names(namespace: str) -> tuple[str, ...]:
    """The Services gateways reach the control plane by (their DNS names are in the
    serving certificate, and the gateways' bootstrap checks them)."""
    names = []
    for service in ("modelroute-xds", "modelroute-stats"):
        names += [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local", f"{service}.{namespace}",
                  service]
    return tuple(names)


@dataclass(frozen=True, slots=True)
class CaState:
    signing: pki.KeyPair  # the CA that signs now
    trusted: tuple[bytes, ...]  # every CA certificate to trust, the signing one first
    pending: pki.KeyPair | None = None  # a new CA: trusted, not signing yet
    pending_since: datetime.datetime | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _data(secret: Obj | None, *keys: str) -> dict[str, bytes] | None:
    raw = (secret or {}).get("data") or {}
    try:
        return {k: base64.b64decode(raw[k]) for k in keys}
    except (KeyError, ValueError):
        return None


def ca_state_of(secret: Obj | None) -> CaState | None:
    data = _data(secret, "ca.crt", "ca.key")
    if data is None:
        return None
    try:
        trusted = tuple(pki.split_bundle(data["ca.crt"]))
        state = CaState(pki.KeyPair(trusted[0], data["ca.key"]), trusted)
        if not pki.matches(state.signing):
            return None
        pending = _data(secret, "pending.crt", "pending.key")
        since = ((secret or {}).get("metadata", {}).get("annotations") or {}).get(PENDING_SINCE)
        if pending is not None and since:
            pair = pki.KeyPair(pending["pending.crt"], pending["pending.key"])
            if pki.matches(pair):
                state = CaState(state.signing, state.trusted, pair, datetime.datetime.fromisoformat(since))
    except (IndexError, ValueError):
        return None
    return state


def ca_secret(namespace: str, state: CaState) -> Obj:
    data = {"ca.crt": _b64(pki.join_bundle(state.trusted)), "ca.key": _b64(state.signing.key_pem)}
    annotations = {}
    if state.pending is not None and state.pending_since is not None:
        data |= {"pending.crt": _b64(state.pending.cert_pem), "pending.key": _b64(state.pending.key_pem)}
        annotations[PENDING_SINCE] = state.pending_since.isoformat()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": CA_SECRET, "namespace": namespace, "labels": dict(MANAGED_BY),
                         "annotations": annotations}, "data": data}


def material_of(state: CaState, namespace: str, *, now: datetime.datetime) -> TlsMaterial:
    """A replica's serving certificate for the control plane's Services, signed by the
    signing CA, trusting every client signed by a trusted CA."""
    serving = pki.new_serving(state.signing, server_names(namespace), now=now)
    return TlsMaterial(serving.cert_pem, serving.key_pem, pki.join_bundle(state.trusted))


class XdsCertificates:
    def __init__(self, api: KubeApi, namespace: str, *, clock: Clock = utc_now, check_every: float = 60.0,
                 propagation: datetime.timedelta = datetime.timedelta(minutes=10)) -> None:
        self._api = api
        self.namespace = namespace
        self._clock = clock
        self.check_every = check_every
        self.propagation = propagation

    # --- the leader ---------------------------------------------------------------------

    async def reconcile(self) -> CaState:
        now = self._clock()
        current = await self._get(CA_SECRET)
        state = ca_state_of(current)
        if state is None:
            if current is not None:
                log.warning("xDS CA Secret unusable, issuing a new CA",
                            extra={"resource": f"Secret {self.namespace}/{CA_SECRET}"})
            ca = pki.new_ca("modelroute-xds-ca", now=now)
            state = CaState(ca, (ca.cert_pem,))
        state = self._rotate(state, now)
        await self._write(current, ca_secret(self.namespace, state))
        await self._gateway_secret(state, now)
        return state

    def _rotate(self, state: CaState, now: datetime.datetime) -> CaState:
        """A due CA gets a successor, trusted at once, signing after `propagation`."""
        alive = tuple(c for c in state.trusted if not pki.expired(c, now=now))
        if state.pending is not None and state.pending_since is not None:
            if now - state.pending_since >= self.propagation:
                log.info("xDS CA rotated: the new CA signs, the old one stays trusted until it expires",
                         extra={"resource": f"Secret {self.namespace}/{CA_SECRET}"})
                return CaState(state.pending, (state.pending.cert_pem, *(c for c in alive
                                                                         if c != state.pending.cert_pem)))
            return CaState(state.signing, alive or state.trusted, state.pending, state.pending_since)
        if pki.due(state.signing.cert_pem, now=now):
            pending = pki.new_ca("modelroute-xds-ca", now=now)
            return CaState(state.signing, (*(alive or state.trusted), pending.cert_pem), pending, now)
        return CaState(state.signing, alive or state.trusted)

    async def _gateway_secret(self, state: CaState, now: datetime.datetime) -> None:
        current = await self._get(GATEWAY_SECRET)
        data = _data(current, "tls.crt", "tls.key", "ca.crt") or {}
        bundle = pki.join_bundle(state.trusted)
        cert = data.get("tls.crt")
        fresh = (cert is not None and not pki.due(cert, now=now) and pki.signed_by(cert, state.signing.cert_pem)
                 and pki.uris(cert) == {GATEWAY_IDENTITY})
        if fresh and data.get("ca.crt") == bundle:
            return
        pair = pki.KeyPair(cert, data["tls.key"]) if fresh and cert else pki.new_client(state.signing, GATEWAY_IDENTITY,
                                                                                         now=now)
        desired = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                   "metadata": {"name": GATEWAY_SECRET, "namespace": self.namespace, "labels": dict(MANAGED_BY)},
                   "data": {"tls.crt": _b64(pair.cert_pem), "tls.key": _b64(pair.key_pem), "ca.crt": _b64(bundle)}}
        await self._write(current, desired)
        log.info("gateway xDS client certificate written", extra={"resource": f"Secret {self.namespace}/{GATEWAY_SECRET}"})

    async def _get(self, name: str) -> Obj | None:
        try:
            return await self._api.get(SECRET, self.namespace, name)
        except NotFound:
            return None

    async def _write(self, current: Obj | None, desired: Obj) -> None:
        if current is None:
            await self._api.create(SECRET, desired)
            return
        same = (current.get("data") == desired["data"]
                and (current["metadata"].get("annotations") or {}) == desired["metadata"].get("annotations", {}))
        if same:
            return
        desired["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await self._api.replace(SECRET, desired)

    async def lead(self, sleep: Sleep = asyncio.sleep) -> None:
        while True:
            try:
                await self.reconcile()
            except ApiError as err:
                log.warning("xDS certificates not reconciled; retrying",
                            extra={"resource": f"Secret {self.namespace}/{CA_SECRET}", "error": str(err)})
            await sleep(self.check_every)

    # --- every replica ------------------------------------------------------------------

    def follower(self, on_material: Callable[[TlsMaterial], None]) -> Informer:
        """An informer on the CA Secret: on each usable state, a serving certificate signed
        by the signing CA (and renewed by the next change or resync) goes to `on_material`."""

        async def changed(change: Change) -> None:
            if change.type == "DELETED":
                return  # keep serving; the leader writes a new one
            state = ca_state_of(change.object)
            if state is not None:
                on_material(material_of(state, self.namespace, now=self._clock()))

        return Informer(self._api, SECRET, changed, namespace=self.namespace,
                        field_selector=f"metadata.name={CA_SECRET}", resync_period=86_400.0)
