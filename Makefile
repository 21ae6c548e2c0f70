# `make demo` segments a bundled photo; `make test` runs the whole test suite (CI), `make test-fast`
# its quick tier (unit tests, a few minutes) for work in progress.
# Both create .venv with the pinned versions in requirements.txt when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast docs bench serve browser web-runtime

# sam2 (a test-only reference) is built from source against the venv's torch, without its CUDA
# extension; build isolation would fetch another torch. pyEdgeEval (test-only too) builds with the
# pinned Cython.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	SAM2_BUILD_CUDA=0 $(BIN)/pip install -q --no-build-isolation sam2==1.1.0
	$(BIN)/pip install -q --no-build-isolation pyEdgeEval==0.2.8
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/promptseg segment src/promptseg/data/samples/coffee.png --point 290,150 \
		$(if $(MODEL),--model $(MODEL),) -o out/coffee_mask.png --overlay out/coffee_overlay.png

# The browser test drives Debian's Chromium (Playwright's own browser downloads are not used).
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# onnxruntime-web (pinned npm release, SHA-256 checked) for decoding in the browser.
web-runtime: $(STAMP)
	$(BIN)/promptseg install-web-runtime --quiet

test: $(STAMP) browser web-runtime docs
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/python -m pytest -q --durations=10

# The documentation site (docs/ and the API reference from the docstrings); --strict fails on a
# broken link or a renamed function.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test-fast: $(STAMP)
	$(BIN)/ruff check src tests benchmarks experiments
	$(BIN)/python -m pytest -q -m "unit and not slow" --durations=5

serve: $(STAMP) web-runtime
	$(BIN)/promptseg serve $(if $(MODEL),--model $(MODEL),)

bench: $(STAMP)
	mkdir -p out/bench
	$(BIN)/python benchmarks/bench_core.py --repeat 5 --prompts 40 --json out/bench/core.json
	$(BIN)/python benchmarks/bench_everything.py --json out/bench/everything.json
	$(BIN)/python benchmarks/bench_everything.py --memory --size 4000x3000 --grid 8 --json out/bench/memory.json
	$(BIN)/python benchmarks/bench_tiny.py --json out/bench/tiny.json
	$(BIN)/python benchmarks/bench_sam2.py --json out/bench/sam2.json
	$(BIN)/python benchmarks/bench_sam2.py --memory --sizes t,l,vit_b --json out/bench/sam2_memory.json
	$(BIN)/python benchmarks/bench_scale.py --json out/bench/scale.json
	$(BIN)/python benchmarks/bench_scale.py --plot out/bench/scale.json -o out/bench/scale_throughput.png
	$(BIN)/python benchmarks/bench_text.py --json out/bench/text.json
	$(BIN)/python benchmarks/bench_server.py --json out/bench/server.json
	$(BIN)/python benchmarks/bench_onnx.py --json out/bench/onnx.json $(if $(wildcard ../shared/eval-data),--eval-data ../shared/eval-data,)
	$(BIN)/python benchmarks/plot_results.py out/bench/core.json out/bench/everything.json \
		out/bench/memory.json -o out/bench/benchmarks.png
