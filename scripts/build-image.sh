#!/usr/bin/env bash
# `make image`: build the Dockerfile with the first container engine that works here:
# docker (if its daemon answers), then podman, then buildah. IMAGE names the result;
# PYTHON_IMAGE overrides the pinned base (e.g. with a digest from your registry mirror).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-ghcr.io/matrixinfer-ai/modelroute:0.1.0}
args=(--tag "$IMAGE" --file Dockerfile)
if [ -n "${PYTHON_IMAGE:-}" ]; then
  args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
fi
tried=()
if command -v docker >/dev/null 2>&1; then
  if docker info >/dev/null 2>&1; then
    exec docker build "${args[@]}" .
  fi
  tried+=("docker (installed, but its daemon does not answer)")
fi
if command -v podman >/dev/null 2>&1; then
  exec podman build "${args[@]}" .
fi
if command -v buildah >/dev/null 2>&1; then
  exec buildah build "${args[@]}" .
fi
echo "make image: no container engine to build with; tried: ${tried[*]:-none of docker, podman, buildah is installed}" >&2
exit 1
