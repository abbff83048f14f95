"""`modelroute sidecar-cert NAMESPACE`: a client certificate for the sidecar Envoys of one
namespace, signed by the cluster's xDS CA (the Secret the control plane keeps,
`controller.kubernetes.xds_certs`), run by an administrator with their kubeconfig.

Its identity (`spiffe://matrixinfer.ai/ns/NAMESPACE/sidecar`) makes the control plane
serve it the sidecar scope of NAMESPACE only (`xds_server.identity`): that namespace's
routes and Secrets, whatever its node metadata claims. It goes into Secret
`modelroute-sidecar-xds` of NAMESPACE (tls.crt, tls.key, ca.crt: mount it as the gateway
mounts modelroute-gateway-xds), or into files with `--out DIR`. Renew it by running the
command again before it expires (90 days).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
from typing import Any
from pathlib import Path

from controller.certs import pki
from controller.kubernetes.status_writer import utc_now
from controller.kubernetes.xds_certs import CA_SECRET, ca_state_of
from xds_server.identity import sidecar_identity

SECRET = "modelroute-sidecar-xds"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sidecar-cert", help="issue the xDS client certificate of one namespace's sidecars")
    p.add_argument("namespace", help="the namespace whose sidecars it is for (and the only one they are served)")
    p.add_argument("--kubeconfig", default=None, help="default $KUBECONFIG")
    p.add_argument("--system-namespace", default=os.environ.get("POD_NAMESPACE", "matrixinfer-system"),
                   help="where the control plane keeps its xDS CA (Secret modelroute-xds-ca)")
    p.add_argument("--out", type=Path, default=None, help="write tls.crt, tls.key, ca.crt into this directory instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from controller.kubernetes.client import KubeClient
    from controller.kubernetes.errors import ApiError, ConfigError, NotFound
    from controller.kubernetes.resources import SECRET as SECRETS

    try:
        client = KubeClient.from_kubeconfig(args.kubeconfig)
    except ConfigError as err:
        print(f"modelroute sidecar-cert: {err}")
        return 2
    async with client as api:
        try:
            state = ca_state_of(await api.get(SECRETS, args.system_namespace, CA_SECRET))
        except NotFound:
            state = None
        if state is None:
            print(f"modelroute sidecar-cert: no usable xDS CA in Secret {args.system_namespace}/{CA_SECRET} "
                  "(is the control plane running with --xds-tls auto?)")
            return 1
        pair = pki.new_client(state.signing, sidecar_identity(args.namespace), now=utc_now())
        files = {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, "ca.crt": pki.join_bundle(state.trusted)}
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                path = args.out / name
                path.touch(mode=0o600)
                path.write_bytes(data)
            print(f"wrote {', '.join(sorted(files))} into {args.out} for {sidecar_identity(args.namespace)}")
            return 0
        secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                  "metadata": {"name": SECRET, "namespace": args.namespace},
                  "data": {k: base64.b64encode(v).decode() for k, v in files.items()}}
        try:
            try:
                current = await api.get(SECRETS, args.namespace, SECRET)
                secret["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await api.replace(SECRETS, secret)
            except NotFound:
                await api.create(SECRETS, secret)
        except ApiError as err:
            print(f"modelroute sidecar-cert: Secret {args.namespace}/{SECRET} not written: {err}")
            return 1
        print(f"Secret {args.namespace}/{SECRET} written for {sidecar_identity(args.namespace)}")
        return 0
