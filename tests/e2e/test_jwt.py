"""Issue #5, "Done when": JWT — no token / bad signature / wrong audience / expired → 401
(the model never sees the request), valid → 200; keys from a Secret
(`config.jwksSecretName`, key `jwks`) and from a `jwksUri` served by a local server."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.e2e.harness import Client, dest, infer, route, running, secret, server, write_manifests
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ISSUER = "https://issuer.modelroute.test"
AUDIENCE = "matrixinfer-api"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": b64url(n), "e": b64url(e)}

    def token(self, kid: str | None = None, **claims: Any) -> str:
        """An RS256 JWT, signed by hand: base64url(header).base64url(claims).signature.
        A claim given as None is left out."""
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "tester", "iat": now, "exp": now + 600, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        header = {"alg": "RS256", "typ": "JWT", "kid": kid or self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"


def jwks(*keys: SigningKey) -> str:
    return json.dumps({"keys": [k.jwk() for k in keys]})


@dataclass
class Setup:
    client: Client
    local_key: SigningKey   # in the Secret
    remote_key: SigningKey  # served at jwksUri
    jwks_fetches: list[str]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    local_key, remote_key = SigningKey("local-1"), SigningKey("remote-1")
    fetches: list[str] = []

    async def serve_jwks(request: web.Request) -> web.Response:
        fetches.append(request.path)
        return web.Response(text=jwks(remote_key), content_type="application/json")

    jwks_app = web.Application()
    jwks_app.router.add_get("/.well-known/jwks.json", serve_jwks)
    runner = web.AppRunner(jwks_app, access_log=None)
    await runner.setup()
    jwks_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", jwks_port).start()
    try:
        directory = tmp_path_factory.mktemp("jwt")
        port = free_port()
        auth = {"enabled": True, "type": "jwt"}
        write_manifests(directory / "all.yaml", [
            infer("secure"), infer("remote"), infer("open"),
            secret("signing-keys", jwks=jwks(local_key)),
            server("secure", port=port, path="/v1/models/secure", authentication={**auth, "config": {
                "issuer": ISSUER, "audience": AUDIENCE, "jwksSecretName": "signing-keys"}}),
            server("remote", port=port, path="/v1/models/remote", authentication={**auth, "config": {
                "issuer": ISSUER, "audience": AUDIENCE,
                "jwksUri": f"http://127.0.0.1:{jwks_port}/.well-known/jwks.json"}}),
            server("open", port=port, path="/v1/models/open"),
            # OpenAI clients under the JWT server: its models' list needs its token too
            route("chat", path="/v1/models/secure/v1", routes=[{**dest("secure"), "match": {"model": "m"}}]),
        ])
        async with running(directory) as _app, Client(port) as client:
            yield Setup(client, local_key, remote_key, fetches)
    finally:
        await runner.cleanup()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def assert_rejected(client: Client, path: str, headers: dict[str, str]) -> None:
    reply = await client.post(path, headers=headers)
    assert reply.status == 401, (reply.status, reply.body)
    assert reply.served_by is None  # the model never saw it


@pytest.mark.parametrize("path", ["/v1/models/secure/infer", "/v1/models/remote/infer"])
async def test_jwt_rejects_missing_and_invalid_tokens(setup: Setup, path: str) -> None:
    key = setup.local_key if "secure" in path else setup.remote_key
    impostor = SigningKey(key.kid)  # same kid, another key: the signature does not verify
    now = int(time.time())
    cases = {
        "no token": {},
        "not a JWT": bearer("not-a-jwt"),
        "bad signature": bearer(impostor.token()),
        "wrong audience": bearer(key.token(aud="someone-else")),
        "wrong issuer": bearer(key.token(iss="https://evil.example")),
        "expired": bearer(key.token(iat=now - 7200, exp=now - 3600)),
    }
    for what, headers in cases.items():
        try:
            await assert_rejected(setup.client, path, headers)
        except AssertionError as err:
            raise AssertionError(f"{what}: {err}") from None


@pytest.mark.parametrize("path", ["/v1/models/secure/infer", "/v1/models/remote/infer"])
async def test_jwt_needs_exp_and_comes_only_in_the_authorization_header(setup: Setup, path: str) -> None:
    """Issue #17: a token without `exp` would be valid forever; one in `?access_token=`
    lands in access logs. Both are refused; the same token in the header passes."""
    key = setup.local_key if "secure" in path else setup.remote_key
    await assert_rejected(setup.client, path, bearer(key.token(exp=None)))
    token = key.token()
    await assert_rejected(setup.client, f"{path}?access_token={token}", {})
    assert (await setup.client.post(path, headers=bearer(token))).status == 200


@pytest.mark.parametrize(("path", "name"), [("/v1/models/secure/infer", "secure"), ("/v1/models/remote/infer", "remote")])
async def test_jwt_valid_token_reaches_the_model(setup: Setup, path: str, name: str) -> None:
    key = setup.local_key if name == "secure" else setup.remote_key
    reply = await setup.client.post(path, headers=bearer(key.token()))
    assert (reply.status, reply.served_by) == (200, name)
    other = setup.remote_key if name == "secure" else setup.local_key
    await assert_rejected(setup.client, path, bearer(other.token()))  # keys are per server


async def test_jwks_uri_is_fetched_from_the_local_server(setup: Setup) -> None:
    reply = await setup.client.post("/v1/models/remote/infer", headers=bearer(setup.remote_key.token()))
    assert reply.status == 200
    assert setup.jwks_fetches and set(setup.jwks_fetches) == {"/.well-known/jwks.json"}


async def test_servers_without_authentication_stay_open(setup: Setup) -> None:
    reply = await setup.client.post("/v1/models/open/infer")
    assert (reply.status, reply.served_by) == (200, "open")
    assert (await setup.client.get("/health")).status == 200


async def test_the_model_list_of_protected_models_needs_their_token(setup: Setup) -> None:
    """Issue #17: GET <base>/models names a model only to a caller who could reach it."""
    path = "/v1/models/secure/v1/models"
    assert (await setup.client.get(path)).status == 401
    assert (await setup.client.get(path, headers=bearer(setup.remote_key.token()))).status == 401
    listed = await setup.client.get(path, headers=bearer(setup.local_key.token()))
    assert listed.status == 200 and [m["id"] for m in listed.body["data"]] == ["m"]
