# The two commands a newcomer runs (see README.md). Both create .venv themselves.
.PHONY: up test bench venv image
venv:
	@scripts/bootstrap.sh

up: venv
	.venv/bin/modelroute up examples/quickstart

test: venv
	.venv/bin/python -m pytest -q -p no:cacheprovider

bench: venv
	.venv/bin/python -m bench

# The container image of deploy/ (control plane and gateway): docker, podman or buildah.
image:
	@scripts/build-image.sh
