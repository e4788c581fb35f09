# The README's two commands: `make demo` (set up and run the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo
NEEDS := examples/needs/todo.json
DIHYA = $(BIN)/dihya --config $(DEMO)/dihya.toml

.PHONY: demo demo-config demo-project test clean sandbox-tools browser redis

$(BIN)/tox:
	@echo "== creating $(VENV) with pip and tox (about a minute on a fresh machine)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "tox>=4.11"

# bubblewrap gives sandbox workers their own network, PID and mount namespaces; without it
# the sandbox still applies its other layers and `dihya plugins show` warns.
sandbox-tools:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "== installing bubblewrap with apt-get (as root: make runs as root) for the sandbox's namespaces"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
	      || echo "warning: could not install bubblewrap; sandbox workers will lack namespaces"; \
	  else echo "warning: bubblewrap (bwrap) is not installed; install it for the sandbox's namespaces"; fi; }

# Debian's Chromium runs the operator console's browser tests (tox -e console-e2e, driven
# by Playwright; no browser is ever downloaded). Without it, and outside CI, they are skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "== installing chromium with apt-get (as root: make runs as root) for the console's browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the console's browser tests will be skipped (they fail under CI=true)"; \
	  else echo "warning: chromium is not installed (apt-get install chromium); the console's browser tests will be skipped"; fi; }

# Debian's redis-server serves the fleet tests' shared rate limits (a private one per test,
# on a free port, keeping nothing on disk). Without it, and outside CI, they are skipped.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server with apt-get (as root), for the fleet tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
	      || echo "warning: could not install redis-server; the fleet's rate-limit test will be skipped (it fails under CI=true)"; \
	  else echo "warning: redis-server is not installed (apt-get install redis-server); the fleet's rate-limit test will be skipped"; fi; }

# Re-runnable: it keeps your demo/dihya.toml and what you added to demo/todo.
# It ends with `dihya doctor`, which exits 1 if this machine or the config has a problem.
demo: $(BIN)/tox sandbox-tools
	@echo "== building dihya-core and the two bundled plugins as wheels and installing them into $(VENV) (about 30 s)"
	$(BIN)/pip install --quiet --force-reinstall --no-deps . ./plugins/example-plugin ./plugins/markdown-docs-plugin
	@echo "== installing their dependencies"
	$(BIN)/pip install --quiet . ./plugins/example-plugin ./plugins/markdown-docs-plugin
	@$(MAKE) --no-print-directory demo-config
	@echo "== approving both plugins (each is loaded once in a sandbox worker to check it)"
	$(DIHYA) plugins approve example markdown-docs
	$(DIHYA) plugins list
	@$(MAKE) --no-print-directory demo-project
	@echo "== checking the sandbox, the config, the store and the plugins"
	$(DIHYA) doctor

# Written only when absent: an existing config is yours (the re-approval above updates just
# the two bundled plugins' entries, keeping your mode, roles, switches and comments).
demo-config:
	@mkdir -p $(DEMO)
	@if [ -e $(DEMO)/dihya.toml ]; then echo "keeping $(DEMO)/dihya.toml as it is"; \
	else $(DIHYA) config init $(DEMO)/dihya.toml; fi

# --update replaces what dihya generated and keeps what you added (a .venv, notes). If it
# refuses (you edited a generated file), the new project goes beside it, into todo.new.
demo-project:
	@$(DIHYA) generate $(NEEDS) -o $(DEMO)/todo --update; rc=$$?; \
	if [ $$rc = 0 ]; then out=$(DEMO)/todo; \
	elif [ $$rc = 2 ]; then \
	  echo "left $(DEMO)/todo as it is (see above); generating beside it, into $(DEMO)/todo.new"; \
	  $(DIHYA) generate $(NEEDS) -o $(DEMO)/todo.new --update || exit $$?; out=$(DEMO)/todo.new; \
	else exit $$rc; fi; \
	echo "Generated project: $$out (try: cd $$out && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/pytest)"

# The envs run two at a time (one per core on this project's 2-core machines; `auto` takes
# the core count): each is a real-process suite that leaves a core idle a third of the time.
# Each env's output is printed whole when it ends, then a line per env and the verdict.
test: $(BIN)/tox sandbox-tools browser redis
	$(BIN)/tox run-parallel --parallel auto --parallel-no-spinner

clean:
	rm -rf $(VENV) $(DEMO) .tox build dist
