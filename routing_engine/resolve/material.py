"""Secret-backed material of a ModelServer: its TLS certificate and its auth policy.

Everything here fails closed. A server whose TLS Secret or auth Secret is missing or
unusable is not compiled at all (SPEC 3.1: "requests never reach the backend" without a
valid token), rather than served in plain text or unauthenticated. Secrets are looked
up in the server's own namespace, as Kubernetes pods mount them.

Problems are split the way the conditions need them: a reference that does not resolve
or resolves to unusable material is a `ResolvedRefs` problem (`ModelNotFound` when the
Secret is absent, `ValidationFailed` when its content is unusable or the Secret was
refused as invalid by its source); a malformed
`authentication.config` value that pydantic let through is an `Accepted` problem only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from routing_engine import ir, names
from routing_engine.envoy_rules import certificate_problem
from routing_engine.jwks import provider_problem
from routing_engine.api.resources import ModelServer, ObjectKey, Secret
from routing_engine.api.types import HEADER_NAME_PATTERN
from routing_engine.resolve.conditions import VALIDATION_FAILED, Problem, problem, unresolved
from routing_engine.resolve.objects import ObjectIndex

T = TypeVar("T")

DEFAULT_API_KEY_HEADER = "x-api-key"
# (field, required) of the string-valued config fields, checked again here (the API
# models check them too) so that no config pydantic lets through can make this raise.
_TEXT_FIELDS = {
    "jwt": (("issuer", True), ("audience", False), ("jwksUri", False), ("jwksSecretName", False)),
    "apiKey": (("secretName", True), ("header", False)),
}
_HEADER_NAME = re.compile(HEADER_NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class Material(Generic[T]):
    value: T | None = None
    ref_problems: tuple[Problem, ...] = ()
    spec_problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.ref_problems and not self.spec_problems


NONE: Material[Any] = Material()  # no material asked for (one value, shared)


def tls_certificate(server: ModelServer, index: ObjectIndex) -> Material[ir.TlsCertificate]:
    """The certificate for `spec.tls`, checked as Envoy (BoringSSL) would load it: a
    certificate Envoy refuses would take the whole listener down with it."""
    spec = server.spec.tls
    if spec is None or not spec.enabled or spec.secret_name is None:
        return NONE
    field = "spec.tls.secretName"
    secret, missing = _secret(server, spec.secret_name, field, index)
    if secret is None:
        return Material(ref_problems=missing)
    cert, key = secret.value("tls.crt"), secret.value("tls.key")
    refused = certificate_problem(cert, key)
    if refused is not None:
        rule = f"Secret {_where(secret)}: {refused}"
        return Material(ref_problems=(problem(VALIDATION_FAILED, server.key, field, rule),))
    assert cert is not None and key is not None  # certificate_problem refuses a missing one
    name = names.tls_certificate(secret.metadata.namespace, secret.metadata.name)
    return Material(ir.TlsCertificate(name=name, cert_chain=cert, private_key=key))


def auth_policy(server: ModelServer, index: ObjectIndex) -> Material[ir.AuthPolicy]:
    spec = server.spec.authentication
    if spec is None or not spec.enabled:
        return NONE
    wrong = [
        problem(VALIDATION_FAILED, server.key, f"spec.authentication.config.{field}", "must be a non-empty string")
        for field, required in _TEXT_FIELDS[spec.type]
        if (field in spec.config or required) and not (isinstance(spec.config.get(field), str) and spec.config[field])
    ]
    if wrong:
        return Material(spec_problems=tuple(wrong))
    if spec.type == "jwt":
        return _jwt(server, spec.config, index)
    return _api_key(server, spec.config, index)


def _jwt(server: ModelServer, cfg: dict[str, Any], index: ObjectIndex) -> Material[ir.AuthPolicy]:
    spec_problems: list[Problem] = []
    audiences: list[str] = [cfg["audience"]] if "audience" in cfg else []
    listed = cfg.get("audiences", [])
    if isinstance(listed, list) and all(isinstance(a, str) and a for a in listed):
        audiences.extend(a for a in listed if a not in audiences)
    else:
        rule = "must be a list of non-empty strings"
        spec_problems.append(problem(VALIDATION_FAILED, server.key, "spec.authentication.config.audiences", rule))
    forward = cfg.get("forwardHeader", False)
    if not isinstance(forward, bool):
        rule = "must be true or false"
        spec_problems.append(problem(VALIDATION_FAILED, server.key, "spec.authentication.config.forwardHeader", rule))
    inline: str | None = None
    ref_problems: tuple[Problem, ...] = ()
    if cfg.get("jwksSecretName"):
        inline, ref_problems = _jwks(server, cfg["jwksSecretName"], index)
    if spec_problems or ref_problems:
        return Material(ref_problems=ref_problems, spec_problems=tuple(spec_problems))
    provider = ir.JwtProvider(
        name=names.auth_policy(server.key),
        issuer=cfg["issuer"],
        audiences=tuple(audiences),
        jwks_uri=cfg.get("jwksUri"),
        jwks_inline=inline,
        forward_header=forward is True,
    )
    refused = provider_problem(provider)
    if refused is not None:  # Envoy would refuse it: fail closed here, before any path is claimed
        field = "spec.authentication.config." + ("jwksSecretName" if inline is not None else "jwksUri")
        return Material(spec_problems=(problem(VALIDATION_FAILED, server.key, field, refused),))
    return Material(provider)


def _jwks(server: ModelServer, secret_name: str, index: ObjectIndex) -> tuple[str | None, tuple[Problem, ...]]:
    """The JWKS document of Secret `secret_name`, key `jwks`: JSON with a `keys` list,
    as Envoy's local_jwks requires (Envoy would otherwise reject every token)."""
    field = "spec.authentication.config.jwksSecretName"
    secret, missing = _secret(server, secret_name, field, index)
    if secret is None:
        return None, missing
    raw = secret.value("jwks")
    try:
        text = raw.decode() if raw is not None else ""
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        rule = f'Secret {_where(secret)} key jwks must hold a JWKS document (JSON with a "keys" list)'
        return None, (problem(VALIDATION_FAILED, server.key, field, rule),)
    return text, ()


def _api_key(server: ModelServer, cfg: dict[str, Any], index: ObjectIndex) -> Material[ir.AuthPolicy]:
    """(ext) Every value of Secret `config.secretName` is a valid key (surrounding white
    space stripped: `echo key | base64` adds a newline, and HTTP strips it from header
    values anyway). The header defaults to `x-api-key`, lower-cased like every header."""
    header: str = cfg.get("header", DEFAULT_API_KEY_HEADER)
    if not _HEADER_NAME.match(header):
        rule = "must be an HTTP header name"
        return Material(spec_problems=(problem(VALIDATION_FAILED, server.key, "spec.authentication.config.header", rule),))
    field = "spec.authentication.config.secretName"
    secret, missing = _secret(server, cfg["secretName"], field, index)
    if secret is None:
        return Material(ref_problems=missing)
    keys: set[str] = set()
    for data_key in sorted(set(secret.data) | set(secret.string_data)):
        raw = secret.value(data_key)
        try:
            value = raw.decode().strip() if raw is not None else ""
        except UnicodeDecodeError:
            value = ""
        if not value:
            rule = f"Secret {_where(secret)} key {data_key} is not a usable API key (empty, not base64 or not UTF-8)"
            return Material(ref_problems=(problem(VALIDATION_FAILED, server.key, field, rule),))
        keys.add(value)
    if not keys:
        rule = f"Secret {_where(secret)} holds no API keys"
        return Material(ref_problems=(problem(VALIDATION_FAILED, server.key, field, rule),))
    policy = ir.ApiKeyAuth(name=names.auth_policy(server.key), header=header.lower(), keys=tuple(sorted(keys)))
    return Material(policy)


def _secret(
    server: ModelServer, name: str, field: str, index: ObjectIndex
) -> tuple[Secret | None, tuple[Problem, ...]]:
    secret = index.secret(server.metadata.namespace, name)
    if secret is None:
        reason, rule = unresolved(ObjectKey(Secret.KIND, server.metadata.namespace, name), index.refused)
        return None, (problem(reason, server.key, field, rule),)
    return secret, ()


def _where(secret: Secret) -> str:
    return f"{secret.metadata.namespace}/{secret.metadata.name}"
