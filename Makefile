# Two commands on a fresh machine: `make run` and `make test`. Everything else they need
# (the venv, Chromium for the browser tests) is installed by the targets below.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test lint unit integration e2e chromium servers clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(VENV)/bin/teleconsult serve --host $(HOST) --port $(PORT)

# Debian's Chromium (browser builds downloaded by playwright or puppeteer cannot be fetched
# here) and a CJK font, so zh-CN pages render in screenshots.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium fonts-wqy-zenhei; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium fonts-wqy-zenhei; fi; }

# Debian's redis-server and coturn: the tests start their own on free loopback ports (the
# RoomStore contract suite; relay-only participants through a real TURN server).
servers:
	@{ command -v redis-server && command -v turnserver; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server coturn; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server coturn; fi; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The whole suite runs in a private network namespace that has only loopback, so no test
# can send a packet anywhere else (see tests/isolated.sh).
test: $(STAMP) chromium servers lint
	tests/isolated.sh $(VENV)/bin/pytest -q $(PYTEST_ARGS)

unit: $(STAMP) servers
	$(VENV)/bin/pytest -q tests/unit

integration: $(STAMP) servers
	tests/isolated.sh $(VENV)/bin/pytest -q tests/integration

e2e: $(STAMP) chromium
	tests/isolated.sh $(VENV)/bin/pytest -q tests/e2e

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts

# The benchmark (bench/, docs/benchmarks.md): minutes, not part of `make test`. matplotlib is a
# bench-only dependency; Janus (the C SFU baseline) comes from Debian and is skipped if absent.
.PHONY: bench bench-smoke
bench: $(STAMP)
	$(PY) -m pip install -q 'matplotlib>=3.7'
	@command -v janus >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  apt-get install -y -qq janus >/dev/null 2>&1; } || echo "bench: janus unavailable, skipped"
	tests/isolated.sh $(PY) -m bench $(BENCH_ARGS)

bench-smoke: $(STAMP)
	tests/isolated.sh $(PY) -m bench --smoke
