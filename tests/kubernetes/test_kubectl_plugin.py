"""Issue #17: `kubectl matrixinfer` against the fake API server, run as kubectl runs it (the
real kubectl finding `kubectl-matrixinfer` on PATH): get (the `modelroute status` table),
-n/-A/-o wide|yaml|json, describe, rollout, validate, and completion."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import yaml

from controller.kubernetes.resources import MODEL_ROUTE
from modelroute.kubectl_plugin import describe_lines
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import model_infer, server
from tests.support import REPO, VENV_BIN

NET = "networking.matrixinfer.ai/v1alpha1"


def _route(name: str, namespace: str, *, canary: dict | None = None, conditions: list | None = None) -> dict:
    spec: dict = {"path": f"/v1/models/{name}", "routes": [
        {"match": {"headers": {"x-user": "beta"}}, "destination": {"modelServerRef": {"name": "v2"}}},
        {"destination": {"modelServerRef": {"name": "v1"}}, "weight": 80},
        {"destination": {"modelServerRef": {"name": "v2"}}, "weight": 20}]}
    status: dict = {"phase": "Active", "activeRoutes": 2, "conditions": conditions or [
        {"type": "Programmed", "status": "True", "reason": "Programmed", "message": "Envoy accepted it",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    if canary is not None:
        spec["canary"] = {"enabled": True, "trafficSplit": {"stable": 90, "canary": 10}}
        status["canary"] = canary
        status["rollout"] = {"state": {"updated_at": 1767225600.0, "message": canary["message"]},
                             "command": {"id": "n1", "command": "pause", "ok": True,
                                         "message": "ModelRoute paused by the user (70/30, Paused)"}}
    return {"apiVersion": NET, "kind": "ModelRoute", "metadata": {"name": name, "namespace": namespace},
            "spec": spec, "status": status}


def _kubeconfig(tmp_path: Path, url: str, namespace: str | None = None) -> Path:
    path = tmp_path / "kubeconfig"
    ns = f", namespace: {namespace}" if namespace else ""
    path.write_text("apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
                    f"clusters: [{{name: fake, cluster: {{server: '{url}'}}}}]\n"
                    f"contexts: [{{name: fake, context: {{cluster: fake, user: u{ns}}}}}]\n"
                    "users: [{name: u, user: {}}]\n")
    return path


async def run(*argv: str, kubeconfig: Path | None = None) -> tuple[int, str, str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    proc = await asyncio.create_subprocess_exec(*argv, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_get_modelroutes_all_namespaces_prints_the_status_table(fake_api: FakeKubeApi, tmp_path: Path) -> None:
    fake_api.seed(_route("llama", "default", canary={"stableWeight": 70, "canaryWeight": 30, "phase": "Paused",
                                                     "lastSuccessRate": 99.5, "message": "paused by the user"}))
    fake_api.seed(_route("chat", "team-b", conditions=[
        {"type": "ResolvedRefs", "status": "False", "reason": "ModelNotFound", "message": "ModelServer team-b/v2 not found"}]))
    kubeconfig = _kubeconfig(tmp_path, fake_api.url)
    code, status, err = await run(sys.executable, "-m", "modelroute.cli", "status", "--kubernetes", kubeconfig=kubeconfig)
    assert code == 0, err
    code, table, err = await run("kubectl", "matrixinfer", "get", "modelroutes", "-A", kubeconfig=kubeconfig)
    assert code == 0, err
    assert status.split("\n", 2)[2] == table  # the same tables, below status's "updated ..." line
    assert "ModelRoute   default/llama" in table and "ModelRoute   team-b/chat" in table
    assert "default/v1 70% (stable), default/v2 30% (canary)" in table and "canary Paused: 70/30" in table
    assert "! ResolvedRefs=False (ModelNotFound: ModelServer team-b/v2 not found)" in table

    code, wide, _ = await run("kubectl", "matrixinfer", "get", "mr", "-A", "-o", "wide", kubeconfig=kubeconfig)
    assert code == 0 and "- Programmed=True (Programmed: Envoy accepted it)" in wide  # every condition
    assert "Programmed=True" not in table

    code, only_default, _ = await run("kubectl", "matrixinfer", "get", "modelroute", kubeconfig=kubeconfig)
    assert code == 0 and "default/llama" in only_default and "team-b" not in only_default
    code, team_b, _ = await run("kubectl", "matrixinfer", "get", "modelroutes", "-n", "team-b", kubeconfig=kubeconfig)
    assert code == 0 and "team-b/chat" in team_b and "default/llama" not in team_b
    ctx = _kubeconfig(tmp_path, fake_api.url, namespace="team-b")  # the context's namespace is the default
    code, from_context, _ = await run("kubectl", "matrixinfer", "get", "modelroutes", kubeconfig=ctx)
    assert from_context == team_b


async def test_get_yaml_json_and_errors(fake_api: FakeKubeApi, tmp_path: Path) -> None:
    fake_api.seed(model_infer("v1", model_name="m"))
    fake_api.seed(server("v1", infer="v1", path="/v1/models/v1"))
    fake_api.seed(server("v2", infer="v1", path="/v1/models/v2"))
    kubeconfig = _kubeconfig(tmp_path, fake_api.url)
    code, out, _ = await run("kubectl", "matrixinfer", "get", "ms", "v1", "-o", "yaml", kubeconfig=kubeconfig)
    one = yaml.safe_load(out)
    assert code == 0 and (one["kind"], one["metadata"]["name"]) == ("ModelServer", "v1")
    assert one["spec"]["routing"]["path"] == "/v1/models/v1"
    code, out, _ = await run("kubectl", "matrixinfer", "get", "modelservers", "-o", "json", kubeconfig=kubeconfig)
    listed = json.loads(out)
    assert listed["kind"] == "List" and [i["metadata"]["name"] for i in listed["items"]] == ["v1", "v2"]
    code, out, err = await run("kubectl", "matrixinfer", "get", "ms", "nope", kubeconfig=kubeconfig)
    assert code == 1 and out == ""
    assert err.startswith("Error from server (NotFound): ") and '"nope" not found' in err
    code, out, err = await run("kubectl", "matrixinfer", "get", "models", kubeconfig=kubeconfig)
    assert (code, out, err) == (0, "", "No resources found in default namespace.\n")
    code, out, err = await run("kubectl", "matrixinfer", "get", "pods", kubeconfig=kubeconfig)
    assert code == 2 and "invalid choice: 'pods'" in err and "Traceback" not in err
    code, _, err = await run("kubectl", "matrixinfer", "get", "ms", kubeconfig=tmp_path / "missing")
    assert code == 1 and err.startswith("error: no Kubernetes credentials")


def test_describe_shows_conditions_live_split_and_rollout_decisions() -> None:
    route = _route("llama", "default", canary={"stableWeight": 70, "canaryWeight": 30, "phase": "Paused",
                                               "lastSuccessRate": 99.5, "message": "step 20% → 30% (success 99.5%)"})
    text = "\n".join(describe_lines("ModelRoute", route))
    assert "Name:         llama" in text and "Kind:         ModelRoute" in text
    assert "Programmed    True    Programmed" in text and "Envoy accepted it" in text
    assert "Live split:" in text and "default/v1 70% (stable), default/v2 30% (canary)" in text
    assert "phase Paused: stable 70% / canary 30%, last success rate 99.5%" in text
    assert "Recent rollout decisions:\n  2026-01-01T00:00:00Z  step 20% → 30% (success 99.5%)" in text
    assert "command pause (applied): ModelRoute paused by the user (70/30, Paused)" in text


async def test_describe_rollout_and_validate_through_kubectl(fake_api: FakeKubeApi, tmp_path: Path) -> None:
    fake_api.seed(_route("llama", "default", canary={"stableWeight": 70, "canaryWeight": 30, "phase": "Paused",
                                                     "message": "paused by the user"}))
    kubeconfig = _kubeconfig(tmp_path, fake_api.url)
    code, out, err = await run("kubectl", "matrixinfer", "describe", "modelroute", "llama", kubeconfig=kubeconfig)
    assert code == 0 and "Live split:" in out and "Recent rollout decisions:" in out, err
    code, out, _ = await run("kubectl", "matrixinfer", "rollout", "status", "llama", kubeconfig=kubeconfig)
    assert code == 0 and "phase Paused: stable 70% / canary 30%" in out
    # Nobody leads the rollout here: the command is withdrawn after --wait, never left behind.
    code, out, _ = await run("kubectl", "matrixinfer", "rollout", "promote", "llama", "--wait", "0.5",
                             kubeconfig=kubeconfig)
    assert code == 1 and "withdrawn" in out
    stored = fake_api.read(MODEL_ROUTE, "default", "llama")
    assert stored is not None and "rollout.matrixinfer.ai/command" not in (stored["metadata"].get("annotations") or {})
    code, out, _ = await run("kubectl", "matrixinfer", "validate", "-f", str(REPO / "examples" / "quickstart"))
    assert code == 0 and out.startswith("6 objects valid")


async def test_completion_for_kubectl_and_both_commands() -> None:
    code, out, _ = await run("kubectl", "__complete", "matrixinfer", "rollout", "p")
    assert code == 0 and out.splitlines()[:3] == ["promote", "pause", ":4"]
    code, out, _ = await run("kubectl", "__complete", "matrixinfer", "get", "model")
    assert out.splitlines()[:5] == ["model", "modelinfer", "modelinfers", "modelroute", "modelroutes"]
    code, out, _ = await run("kubectl", "__complete", "matrixinfer", "get", "mr", "-o", "")
    assert out.splitlines()[:4] == ["wide", "yaml", "json", ":4"]
    scripts = {prog: (await run(str(VENV_BIN / prog), "completion", "bash"))[1]
               for prog in ("modelroute", "kubectl-matrixinfer")}
    for prog, line, expected in [
        ("modelroute", "modelroute rollout p", "promote pause"),
        ("modelroute", "modelroute compile -o ", "yaml json"),
        ("modelroute", "modelroute up --log-level w", "warning"),
        ("modelroute", "modelroute --v", "--version"),
        ("kubectl-matrixinfer", "kubectl-matrixinfer get -", "-h --help -o --output -l --selector -n --namespace -A "
                                                              "--all-namespaces --kubeconfig --context"),
    ]:
        words = line.split(" ")  # a trailing space: a new, empty word is being completed
        array = " ".join(f"'{w}'" for w in words)
        function = "_" + prog.replace("-", "_")
        code, out, err = await run("bash", "-c", scripts[prog] + f"\nCOMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; "
                                   f'{function}; echo "${{COMPREPLY[*]}}"')
        assert (code, out.strip()) == (0, expected), (line, err)
