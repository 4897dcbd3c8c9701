# The ways in (README):
#   make lab       JupyterLab on notebooks/, with the project's kernel ("HydraLoRA Lab")
#   make suite     every notebook, in order, under papermill, on the `default` profile
#   make test      pytest (a real browser test included), then every notebook on the `ci` profile
#   make cluster   the optional extra 'cluster' (Ray) for executor: ray
#   make student   student copies of the notebooks (solutions replaced by stubs) in build/student/
#   make book      a static site of the last suite run (executed notebooks and report), readable offline,
#                  in build/<profile>/book/html/ (PROFILE=ci for make test's run)
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

.PHONY: lab kernel suite test pytest notebooks-ci student release grade book benchmark base clean-build cluster

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The optional extra 'cluster' (Ray, for executor: ray): `make cluster`; .ci/run installs it, so make test runs
# tests/test_executors.py's local Ray cluster.
cluster: $(VENV)/.cluster
$(VENV)/.cluster: requirements-cluster.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-cluster.txt
	touch $@

# The kernel "HydraLoRA Lab" (name hydralib) runs this venv's Python, inside the venv (--sys-prefix). Every
# notebook names it, so the lab, the suite and the tests install it first.
KERNEL := $(VENV)/share/jupyter/kernels/hydralib/kernel.json
$(KERNEL): $(VENV)/.installed
	$(PY) -m ipykernel install --sys-prefix --name hydralib --display-name "HydraLoRA Lab"

# Also register the kernel for your user, so that a JupyterLab installed elsewhere can run the notebooks.
kernel: $(VENV)/.installed
	$(PY) -m ipykernel install --user --name hydralib --display-name "HydraLoRA Lab"

lab: $(KERNEL)
	@echo "HYDRALIB_DATA=$(HYDRALIB_DATA) HYDRALIB_CACHE=$(HYDRALIB_CACHE)"
	$(PY) -m jupyterlab --notebook-dir=notebooks --port=$(LAB_PORT) $(LAB_ARGS)

suite: $(KERNEL)
	$(PY) -m hydralib suite --profile $(PROFILE)

test: pytest notebooks-ci

pytest: $(KERNEL) $(VENV)/.cluster   # the tests run the local Ray cluster, so they install the extra
	$(PY) -m pytest -q

notebooks-ci: $(KERNEL)
	$(PY) -m hydralib suite --profile ci

student: $(VENV)/.installed
	$(PY) -m hydralib.student

book: $(VENV)/.installed
	$(PY) -m hydralib.book --profile $(PROFILE)
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
