# Set-up is part of every target: each works on a fresh clone (Python 3.11, pip).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/activate
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[cpu,dev,postgres,export]'

# Main job: demo study (synthetic data, 2 classes x 6 trials, CPU) → promotion to the MLflow registry.
demo: setup
	$(BIN)/ssad study run studies/demo.yaml --resume
	$(BIN)/ssad promote studies/demo.yaml

test: setup
	$(BIN)/ruff check ssad tests benchmarks experiments
	$(BIN)/python -m pytest -q --durations=15

bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf runs promoted
