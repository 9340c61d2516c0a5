# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# torch==2.13.0 is pinned in constraints.txt: it installs a CPU build offline on these machines.
# uv installs (bootstrapped by pip into the venv): it downloads and unpacks in parallel and
# byte-compiles on every core, 56 s against pip's 134 s for the same packages here. uv reads
# no pip configuration, so pip's find-links (where that CPU build lies) are passed on.
FIND_LINKS = $(sort $(PIP_FIND_LINKS) $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_INSTALL = $(BIN)/uv pip install -q --python $(PY) --compile-bytecode -c constraints.txt \
	$(foreach d,$(FIND_LINKS),--find-links $(d))

.PHONY: install demo test lint docs bench export kernels web clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(UV_INSTALL) -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vaefast demo --out out/demo

# one file per worker, in tests/conftest.py's order (long files first): xdist would otherwise
# reorder files by their number of tests
test: lint docs
	$(PY) -m pytest -q -p no:cacheprovider --benchmark-disable --durations=15 \
		-n auto --dist loadfile --no-loadscope-reorder

# ruff: lint (pyflakes + pycodestyle) and the formatter's check; `ruff format` fixes the latter
lint: $(STAMP)
	$(BIN)/ruff check vaefast tests benchmarks
	$(BIN)/ruff format --check vaefast tests benchmarks

# the docs site (MkDocs, mkdocs-material, the API from docstrings) into site/, strictly: a
# broken link or reference fails the build
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

bench: $(STAMP)
	mkdir -p out/bench
	$(PY) -m pytest benchmarks -q -p no:cacheprovider --benchmark-only \
		--benchmark-json=out/bench/results.json
	$(BIN)/vaefast bench report out/bench/results.json --out out/bench/report

export: $(STAMP)
	$(PY) -m vaefast.shipped.build

# the precompiled t-SNE kernels the package ships (after editing a kernel module: a test
# checks they were built from today's sources)
kernels: $(STAMP)
	$(PY) -m vaefast.tsne.precompiled.build

# the explorer's page: npm packages from the committed lockfile, bundled by esbuild into
# vaefast/explore/static (committed: users and CI need no Node)
web:
	cd vaefast/explore/web && npm ci --no-audit --no-fund && node build.mjs

clean:
	rm -rf out site .pytest_cache .benchmarks
