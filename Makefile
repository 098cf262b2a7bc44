# Every target builds its own environment from nothing: python3 -> .venv -> the project.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
JOBS   ?= 2

.PHONY: test demo bench venv clean fixtures

venv: $(STAMP)

$(STAMP): pyproject.toml
	@echo "== one-time setup: .venv with nvmstream (editable) and its dependencies from"
	@echo "   pyproject.toml: numpy numba onnx onnxruntime pyzmq msgpack soxr tqdm, plus the"
	@echo "   test extra (pytest hypothesis pytest-xdist matplotlib distributed); ~2 min"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23.2"
	$(PY) -m pip install --progress-bar off -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile tests

demo: $(STAMP)
	$(PY) demos/demo.py

bench: $(STAMP)
	$(PY) -m nvmstream.runtime.cli bench --out bench-results

# Regenerating the committed ONNX fixtures needs torch (the `train` extra); tests never do.
fixtures: $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,train]"
	$(PY) tests/fixtures/make_fixtures.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
