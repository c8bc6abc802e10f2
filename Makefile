# The README's commands. Each one sets up .venv (once, again when pyproject.toml or
# constraints.txt change) and then does its job.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.densemtl-lab-installed
PYTEST_ARGS ?=

.PHONY: setup run test browser lab bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,aggregators]"
	$(PY) -m ipykernel install --sys-prefix --name densemtl-lab --display-name "DenseMTL lab"
	touch $(STAMP)

## The main job: run every notebook headless (quick profile) into a new folder under runs/.
run: setup
	$(VENV)/bin/densemtl-lab run

## The whole test suite (serially: two torch processes on 2 cores slow each other ~15x). The browser
## tests need Debian's Chromium: installed here when missing and this user may (root or sudo without a
## password, apt-get); otherwise they skip, saying how to enable them.
test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

browser:
	@bash tests/install_chromium.sh

## JupyterLab on 127.0.0.1 with a fresh random token (--allow-root only when run as root). The token
## goes through the environment (JUPYTER_TOKEN), which only this user can read; `ps` shows command lines.
lab: setup
	export JUPYTER_TOKEN=$$($(PY) -c 'import secrets; print(secrets.token_hex(24))'); \
	exec $(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --notebook-dir=notebooks \
		$$(if [ "$$(id -u)" = 0 ]; then echo --allow-root; fi)

## Benchmarks print JSON (run on demand, not in CI).
bench: setup
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
