# Two commands on a fresh machine: `make run` and `make test`. Everything else they need
# (the venv, Chromium and Firefox for the browser tests) is installed by the targets below.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test lint unit integration e2e chromium firefox servers clean fuzz cluster

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

# Debian's Firefox ESR, driven over Marionette (marionette-driver, in the test extras): the
# browser suite's core call runs in it beside Chromium.
firefox:
	@command -v firefox-esr >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq firefox-esr; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq firefox-esr; fi; }

# Debian's redis-server, coturn and PostgreSQL: the tests start their own on free loopback
# ports or a private socket (the RoomStore and records contract suites; relay-only
# participants through a real TURN server).
SERVER_PACKAGES := redis-server coturn postgresql
servers:
	@{ command -v redis-server && command -v turnserver && \
	   ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(SERVER_PACKAGES); \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $(SERVER_PACKAGES); fi; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The whole suite runs in a private network namespace that has only loopback, so no test
# can send a packet anywhere else (see tests/isolated.sh).
test: $(STAMP) chromium firefox servers lint
	tests/isolated.sh $(VENV)/bin/pytest -q $(PYTEST_ARGS)

unit: $(STAMP) servers
	$(VENV)/bin/pytest -q tests/unit

integration: $(STAMP) servers
	tests/isolated.sh $(VENV)/bin/pytest -q tests/integration

e2e: $(STAMP) chromium firefox
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

# The protocol fuzzer at scale (tests/fuzz, docs/testing.md): >= 100,000 fuzzed messages
# against a real server while two bots keep a call going; a few minutes, not part of
# `make test` (which runs a few hundred examples). FUZZ_ARGS="--seed N" replays a run.
fuzz: $(STAMP)
	tests/isolated.sh $(PY) -m tests.fuzz $(FUZZ_ARGS)

# A local cluster to try several nodes: a private redis-server, two signaling nodes (ports
# 8081 and 8082) and two media Workers; it prints a join link on each node. Ctrl-C stops it.
cluster: $(STAMP) servers
	$(VENV)/bin/teleconsult cluster --dir .cluster
