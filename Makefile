# The ways in (README):
#   make lab       JupyterLab on notebooks/, with the project's kernel ("HydraLoRA Lab")
#   make suite     every notebook, in order, under papermill, on the `default` profile
#   make test      pytest (a real browser test included), then every notebook on the `ci` profile
#   make student   student copies of the notebooks (solutions replaced by stubs) in build/student/
#   make release   what a class gets: build/release/hydralora-lab-student/ and .zip (PACK=file adds a results pack)
#   make grade     SUBMISSIONS=folder (one folder per student): points and feedback in SUBMISSIONS/grades.csv
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default
LAB_PORT ?= 8888
# The same environment for the lab, the suite and the tests. Real benchmark files (GSM8K, MMLU): the
# clone's data/, unless HYDRALIB_DATA is set already. Built bases and converted models: the cache.
export HYDRALIB_DATA ?= $(abspath data)
export HYDRALIB_CACHE ?= $(HOME)/.cache/hydralib

.PHONY: lab kernel suite test pytest notebooks-ci student release grade benchmark base clean-build

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The kernel "HydraLoRA Lab" (name hydralib) runs this venv's Python, inside the venv (--sys-prefix).
$(VENV)/share/jupyter/kernels/hydralib/kernel.json: $(VENV)/.installed
	$(PY) -m ipykernel install --sys-prefix --name hydralib --display-name "HydraLoRA Lab"

# Also register the kernel for your user, so that a JupyterLab installed elsewhere can run the notebooks.
kernel: $(VENV)/.installed
	$(PY) -m ipykernel install --user --name hydralib --display-name "HydraLoRA Lab"

lab: $(VENV)/share/jupyter/kernels/hydralib/kernel.json
	@echo "HYDRALIB_DATA=$(HYDRALIB_DATA) HYDRALIB_CACHE=$(HYDRALIB_CACHE)"
	$(PY) -m jupyterlab --notebook-dir=notebooks --port=$(LAB_PORT) $(LAB_ARGS)

suite: $(VENV)/.installed
	$(PY) -m hydralib suite --profile $(PROFILE)

test: pytest notebooks-ci

pytest: $(VENV)/.installed
	$(PY) -m pytest -q

notebooks-ci: $(VENV)/.installed
	$(PY) -m hydralib suite --profile ci

student: $(VENV)/.installed
	$(PY) -m hydralib.student

# PACK=path/to/pack: a results pack (python -m hydralib store export) shipped in the release's results/.
release: $(VENV)/.installed
	$(PY) -m hydralib.student --release $(if $(PACK),--pack $(PACK))

# Otter-Grader runs the hidden tests (grading/hidden_tests/) on each exercise's cells; GRADES=file.csv to change
# where the CSV goes.
ifneq ($(filter grade,$(MAKECMDGOALS)),)
ifeq ($(SUBMISSIONS),)
$(error usage: make grade SUBMISSIONS=folder (one folder per student))
endif
endif
grade: $(VENV)/.installed
	$(PY) -m hydralib grade $(SUBMISSIONS) $(if $(GRADES),--out $(GRADES))

benchmark: $(VENV)/.installed
	$(PY) benchmarks/adapter_speed.py

base: $(VENV)/.installed ; $(PY) -m hydralib.bases --rebuild $(or $(BASE),all)  # pretrain and replace data/bases/ (BASE=default|ci)

clean-build:
	rm -rf build
