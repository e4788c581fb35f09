# The README's two commands: `make demo` (set up and run the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo

.PHONY: demo test clean sandbox-tools

$(BIN)/tox:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "tox>=4.11"

# bubblewrap gives sandbox workers their own network, PID and mount namespaces; without it
# the sandbox still applies its other layers and `dihya plugins show` warns.
sandbox-tools:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
	      || echo "warning: could not install bubblewrap; sandbox workers will lack namespaces"; \
	  else echo "warning: bubblewrap (bwrap) is not installed; install it for the sandbox's namespaces"; fi; }

demo: $(BIN)/tox sandbox-tools
	$(BIN)/pip install --quiet --force-reinstall --no-deps . ./plugins/example-plugin ./plugins/markdown-docs-plugin
	$(BIN)/pip install --quiet . ./plugins/example-plugin ./plugins/markdown-docs-plugin
	mkdir -p $(DEMO)
	printf '# Demo backend config written by `make demo`.\n[plugins]\nhook_timeout_s = 2.0\n' > $(DEMO)/dihya.toml
	$(BIN)/dihya --config $(DEMO)/dihya.toml plugins approve example markdown-docs
	$(BIN)/dihya --config $(DEMO)/dihya.toml plugins list
	$(BIN)/dihya --config $(DEMO)/dihya.toml generate examples/needs/todo.json -o $(DEMO)/todo --force
	@echo "Generated project: $(DEMO)/todo (try: cd $(DEMO)/todo && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/pytest)"

test: $(BIN)/tox sandbox-tools
	$(BIN)/tox run

clean:
	rm -rf $(VENV) $(DEMO) .tox build dist
