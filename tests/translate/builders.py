"""Hand-built IR for translate tests: small helpers with defaults a test overrides."""

from __future__ import annotations

from routing_engine import ir
from routing_engine.api.resources import ObjectKey


def server_key(name: str) -> ObjectKey:
    return ObjectKey("ModelServer", "default", name)


def route_key(name: str) -> ObjectKey:
    return ObjectKey("ModelRoute", "default", name)


def backend(name: str, *endpoints: ir.Endpoint) -> ir.Backend:
    eps = endpoints or (ir.Endpoint("127.0.0.1", 9000),)
    return ir.Backend(name=name, owner=server_key(name.split("/")[-1]), endpoints=eps)


def route(
    name: str,
    *backends: ir.WeightedBackend | str,
    path: str = "/v1/models/a",
    kind: str = "segment_prefix",
    owner: ObjectKey | None = None,
    **fields: object,
) -> ir.Route:
    weighted = tuple(b if isinstance(b, ir.WeightedBackend) else ir.WeightedBackend(b, 1) for b in backends)
    match = fields.pop("match", None) or ir.RouteMatch(path=ir.PathMatch(kind, path))  # type: ignore[arg-type]
    return ir.Route(
        name=name,
        owner=owner or route_key(name),
        match=match,  # type: ignore[arg-type]
        backends=weighted,
        timeout_ms=int(fields.pop("timeout_ms", 60_000)),  # type: ignore[arg-type]
        retries=int(fields.pop("retries", 0)),  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


def listener(*routes: ir.Route, name: str = "http-8080", port: int = 8080, **fields: object) -> ir.Listener:
    return ir.Listener(name=name, address="0.0.0.0", port=port, routes=routes, **fields)  # type: ignore[arg-type]


def gateway(*listeners: ir.Listener, backends: tuple[ir.Backend, ...] = ()) -> ir.Gateway:
    if not backends:
        used = sorted({n for lst in listeners for r in lst.routes for wb in r.backends for n in (wb.backend, wb.failover_to) if n})
        backends = tuple(backend(n) for n in used)
    return ir.Gateway(listeners=listeners, backends=backends)


def parsed(result, type_url: str, name: str):  # type: ignore[no-untyped-def]
    """The message of one resource of a TranslateResult."""
    from routing_engine import serialize

    return serialize.parse(result.resources[type_url][name])


def table_name(resources, listener_name: str) -> str:  # type: ignore[no-untyped-def]
    """The RouteConfiguration a listener asks for (named after the listener's content)."""
    from routing_engine import serialize
    from routing_engine.translate.listener import route_config_name
    from routing_engine.translate.xds import LISTENER

    return route_config_name(serialize.parse(resources[LISTENER][listener_name]))


def table_of(result, listener_name: str):  # type: ignore[no-untyped-def]
    """The parsed RouteConfiguration of a listener of a TranslateResult."""
    from routing_engine.translate.xds import ROUTE

    return parsed(result, ROUTE, table_name(result.resources, listener_name))


def hcm_of(listener_proto):  # type: ignore[no-untyped-def]
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    hcm = hcm_pb2.HttpConnectionManager()
    assert listener_proto.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return hcm


def routes_of(route_config):  # type: ignore[no-untyped-def]
    """Routes by name of a RouteConfiguration's single virtual host."""
    (vhost,) = route_config.virtual_hosts
    return {r.name: r for r in vhost.routes}


# A real RSA public key (no private half anywhere): Envoy refuses inline JWKS without one.
JWKS = '{"keys":[{"kty":"RSA","alg":"RS256","kid":"test","use":"sig","e":"AQAB","n":"0h3f52LlJDzaUdHFwmm3rduwsC45ep2aGAOQae-_QJhemLItiUGQTeL00AzOfJhFYXLDoFXB8nWpd03vltolckvYExnV8nHLKJmtv40wqIj_6NLB3_pUfAmnVKbK9EKj_fAxIVznwI9hv-FNddwi0e6RPg0n2NTJmEQpXbbkVZGmHUAiDCpve46Pdw1hZj0zNhtwKubLbNS2vmQbZ83iUsYbqWmlJuoXdN8jv9y94ncKq-byDCIg_0sevdTl0DRWW3ss5exdi17nB38X0A3vp3-iFXLULpSu3Q9XnO4Wq_FUzMbN-4GneV6OIPOR75CgXSQ8CVql30bc5gceM6Y-Iw"}]}'

# A self-signed EC certificate for models.example (test material only).
TLS_CERT = b"""-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUHbqgooUKWkcNtI0/DiAZO1PYo08wCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwObW9kZWxzLmV4YW1wbGUwIBcNMjYxMTI1MTIxMDAzWhgPMjEy
NjExMDExMjEwMDNaMBkxFzAVBgNVBAMMDm1vZGVscy5leGFtcGxlMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEdZ6V39uwgUik+IZaLNV704lpr9bvhwS9u6A0HR8D
hKlHZ2RvSpWcPicytlKz33R9DXazcjsl8ViMXpLofl3pdKNTMFEwHQYDVR0OBBYE
FCn095QNFM3mFqsRwSks+E1RhtV2MB8GA1UdIwQYMBaAFCn095QNFM3mFqsRwSks
+E1RhtV2MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgYPcKNoDF
384JOZEmog6PBktDePJasYeDMz7Udcqun+QCIQDqt9qX4+vdTdYAs9IfYDpfnJto
Ha/rH7weBioRWOMagQ==
-----END CERTIFICATE-----
"""
TLS_KEY = b"""-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgIa1HrmR9/Iu6CQPX
27clc6s6ihls8Dfz+mLSDTenYdGhRANCAAR1npXf27CBSKT4hlos1XvTiWmv1u+H
BL27oDQdHwOEqUdnZG9KlZw+JzK2UrPfdH0NdrNyOyXxWIxekuh+Xel0
-----END PRIVATE KEY-----
"""
