# The two commands of the README: `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PG_URL ?= postgresql://postgres@127.0.0.1:5432/test
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/regcast/__init__.py)
IMAGE := dist/regcast-$(VERSION)-oci.tar

.PHONY: run test lint bench install install-test registry browser clean image test-image

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip==26.3

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

registry:  # integration tests need the real binary: no binary fails here, it never skips them
	@command -v docker-registry >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq docker-registry; }
	@command -v docker-registry >/dev/null || { echo "docker-registry is not installed and could not be installed: make test cannot run its integration tests" >&2; exit 1; }

browser:  # the dashboard's browser tests drive Debian's chromium through Playwright (no browser download)
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

run: install
	$(BIN)/regcast serve

lint: install-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: install-test registry browser lint
	@if [ -z "$$REGCAST_TEST_POSTGRES_URL" ] && $(BIN)/python -c "import psycopg,sys; psycopg.connect('$(PG_URL)', connect_timeout=3).close()" 2>/dev/null; then \
		export REGCAST_TEST_POSTGRES_URL=$(PG_URL); echo "PostgreSQL found: $(PG_URL)"; \
	else echo "PostgreSQL: $${REGCAST_TEST_POSTGRES_URL:-not reachable at $(PG_URL); its tests will be skipped}"; fi; \
	$(BIN)/pytest -q

$(VENV)/.installed-bench: $(VENV)/.installed-test pyproject.toml
	$(BIN)/pip install -q -e '.[test,bench]'
	@touch $@

# skopeo is compared where it can be installed; the bench leaves it out (and says so) where it cannot
bench: install-test registry $(VENV)/.installed-bench
	@command -v skopeo >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq skopeo; } || echo "skopeo not installed: the bench leaves it out" >&2
	$(BIN)/python -m benchmarks

# An OCI image of regcast without a Docker daemon (debootstrap + buildah; image/build.sh), as an oci-archive.
image: $(IMAGE)

$(IMAGE): $(BIN)/python pyproject.toml Containerfile image/install.sh image/build.sh $(shell find src -name '*.py' -o -name '*.mako')
	@command -v buildah >/dev/null && command -v debootstrap >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq buildah debootstrap; }
	rm -rf dist/wheels && $(BIN)/pip wheel -q -w dist/wheels .
	$(SUDO) image/build.sh $(VERSION) dist/wheels $(IMAGE)
	@ls -lh $(IMAGE) | awk '{print "image size: " $$5 " (" $$9 ")"}'

# The image tested on this machine: loaded with `regcast copy`, run by podman and from its root filesystem (tests/image).
test-image: install-test registry image
	@command -v podman >/dev/null && command -v runc >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq podman runc; }
	REGCAST_TEST_IMAGE=$(IMAGE) $(BIN)/pytest -q tests/image

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
