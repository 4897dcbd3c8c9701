# Two commands do all the set-up on a fresh machine:
#   make suite   every notebook, in order, under papermill, on the `default` profile
#   make test    pytest, then every notebook on the `ci` profile
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default
# The real benchmark files (GSM8K, MMLU) for notebook 08: ../shared/data where it exists, unless set already.
ifneq ($(wildcard ../shared/data),)
export HYDRALIB_DATA ?= $(abspath ../shared/data)
endif

.PHONY: suite test pytest notebooks-ci benchmark clean-build

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

suite: $(VENV)/.installed
	$(PY) -m hydralib suite --profile $(PROFILE)

test: pytest notebooks-ci

pytest: $(VENV)/.installed
	$(PY) -m pytest -q

notebooks-ci: $(VENV)/.installed
	$(PY) -m hydralib suite --profile ci

benchmark: $(VENV)/.installed
	$(PY) benchmarks/adapter_speed.py

clean-build:
	rm -rf build
base: $(VENV)/.installed ; $(PY) -m hydralib.bases --rebuild $(or $(BASE),all)  # pretrain and replace data/bases/ (BASE=default|ci)
