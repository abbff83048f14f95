"""Small helpers for the Kubernetes tests: manifests, running a coroutine as a task that
is always cancelled, bounded async waits."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """Run `coro` in a task for the body of the `async with`; cancel and await it after."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(predicate: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition") -> None:
    """Await until `predicate()` is true; fail naming `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def route(name: str, *, path: str = "/v1/a", server: str = "s", namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelRoute",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"path": path, "routes": [{"destination": {"modelServerRef": {"name": server}}}]}}


def server(name: str, *, infer: str, port: int = 8080, path: str = "/v1/models/a") -> dict[str, Any]:
    return {"apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelServer",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"modelInferRef": {"name": infer}, "service": {"type": "ClusterIP", "port": port},
                     "routing": {"path": path, "timeout": "30s"}}}


def model(name: str = "llama-7b", *, image: str = "vllm/vllm-openai:v0.6.0",
          resources: dict[str, Any] | None = None) -> dict[str, Any]:
    runtime: dict[str, Any] = {"image": image}
    if resources is not None:
        runtime["resources"] = resources
    return {"apiVersion": "registry.matrixinfer.ai/v1alpha1", "kind": "Model",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"modelSpec": {"modelId": "meta-llama/Llama-2-7b", "framework": "vllm", "version": "v2",
                                   "source": {"uri": "s3://models/llama-2-7b"}},
                     "runtime": runtime}}


def model_infer(name: str = "llama-infer", *, model_name: str = "llama-7b", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "workload.matrixinfer.ai/v1alpha1", "kind": "ModelInfer",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"modelRef": {"name": model_name}, **spec}}


def endpoint_slice(name: str, *, service: str, ready: dict[str, bool], port: int = 8080) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ok}} for ip, ok in ready.items()]}


async def mock_replica(infer: str, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.engines.mock_engine", "--port", str(port), "--model", "llama", "--infer", infer,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return proc


async def served_by(url: str) -> str | None:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            async with session.post(url, json={}) as response:
                return response.headers.get("x-modelinfer") if response.status == 200 else None
    except aiohttp.ClientError:
        return None
