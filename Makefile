# vitcnn: `make book` builds the book on the embedded default; `make test` runs the test suite.
# Both create (or reuse) the virtual environment .venv/ from requirements.txt + constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: book test zoo bench data clean-book

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir --upgrade pip
	$(PY) -m pip install -q --no-cache-dir -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-cache-dir --no-deps --no-build-isolation -e .
	touch $@

# Fashion-MNIST: Debian's package where it is missing and we can install it; otherwise see README (data_dir).
data:
	@if [ -z "$$VITCNN_DATA_DIR" ] && [ ! -d $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist); \
	fi

test: $(VENV)/.installed data
	$(PY) -m pytest tests -q -p no:cacheprovider

# BOOK_ARGS: more arguments for the book tool, e.g. BOOK_ARGS="-f params.yaml" (a parameter file for every chapter)
book: $(VENV)/.installed data
	$(PY) -m vitcnn_utils.tools.book $(BOOK_ARGS)

zoo: $(VENV)/.installed data
	$(PY) -m vitcnn_utils.zoo

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_cka.py

clean-book:
	rm -rf book/_build book/chapters/*.ipynb
