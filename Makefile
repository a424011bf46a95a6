# Two entry points: `make demo` and `make test`. Each builds .venv on first use.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: on these machines 2.13.0 is a CPU build on disk; a range would pull CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,plots,data,hf]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/shrink demo

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/compress_time.py

clean:
	rm -rf $(VENV) build *.egg-info
