# LesionLite. `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8501
WEBAPP_PORT ?= 5000

.PHONY: demo test test-fast lint venv release-install real-cpu real-cpu-sweep bench-pipeline dashboard webapp

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m scripts.pipeline -c configs/demo.yaml --sweep configs/sweep-demo.yaml
	@echo "Starting the dashboard at http://localhost:$(PORT) (Ctrl-C to stop)"
	$(PY) -m streamlit run dashboard/app.py --server.port $(PORT)

# The release in the repository (results/release/): its gate backbone rebuilt from the package weights, its store
# rows loaded. `make dashboard` and `make webapp` show and serve it unless LESIONLITE_DB / LESIONLITE_VARIANT say
# otherwise.
release-install: $(STAMP)
	$(PY) -m scripts.release install

dashboard: release-install
	@echo "Dashboard at http://localhost:$(PORT) (Ctrl-C to stop)"
	LESIONLITE_DB=$${LESIONLITE_DB:-results/release/results.duckdb} \
		$(PY) -m streamlit run dashboard/app.py --server.port $(PORT)

webapp: release-install
	LESIONLITE_ENV=development LESIONLITE_EXTERNAL_URL=$${LESIONLITE_EXTERNAL_URL:-http://localhost:$(WEBAPP_PORT)} \
		LESIONLITE_VARIANT=$${LESIONLITE_VARIANT-$$(test -n "$$LESIONLITE_DB" || echo results/release)} \
		$(PY) -m flask --app 'webapp:create_app()' run --port $(WEBAPP_PORT)

test: $(STAMP)
	$(PY) -m ruff check core scripts tests dashboard webapp
	$(PY) -m pytest

# Unit and site tests on a tiny variant built in seconds (no sweep, no session-trained model): at most 3 minutes.
test-fast: $(STAMP)
	$(PY) -m ruff check core scripts tests dashboard webapp
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check core scripts tests dashboard webapp

real-cpu: $(STAMP)
	$(PY) -m scripts.pipeline -c configs/ham10000-cpu.yaml

# The compression sweep over the newest real-data model of real-cpu (give PARENT=<run_id> to choose another).
real-cpu-sweep: $(STAMP)
	$(PY) -m scripts.sweep -c configs/sweep-ham10000-cpu.yaml \
		--parents efficientnet_lite0=$${PARENT:-$$(ls -t results/models | grep efficientnet_lite0-train | head -1)}

bench-pipeline: $(STAMP)
	$(PY) -m scripts.bench_pipeline
