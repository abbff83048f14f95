# The two commands a newcomer runs (see README.md). Both create .venv themselves.
.PHONY: up test bench venv
venv:
	@scripts/bootstrap.sh

up: venv
	.venv/bin/modelroute up examples/quickstart

test: venv
	.venv/bin/python -m pytest -q -p no:cacheprovider

bench: venv
	.venv/bin/python -m bench
