# texgrid build, test and demo entry points. `make help` lists them.
#
# The OpenBLAS-backed GEMM is used when Debian's libopenblas is installed (build tag
# `openblas`); without it everything builds and runs on gonum's pure-Go BLAS.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
GO ?= go
BIN := $(CURDIR)/bin
ORT_DIR := $(CURDIR)/.cache/onnxruntime
OPENBLAS := $(wildcard /usr/lib/x86_64-linux-gnu/libopenblas.so /usr/lib/aarch64-linux-gnu/libopenblas.so)
TAGS ?= $(if $(OPENBLAS),openblas,)
GOFLAGS_TAGS := $(if $(TAGS),-tags $(TAGS),)
export TEXGRID_ORT_LIB ?= $(ORT_DIR)/libonnxruntime.so.1
TEST_TIMEOUT ?= 20m

.PHONY: help build demo test test-short e2e compare bench lint deps ort package clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends
DEB_PKGS := gcc libc6-dev libopenblas-dev postgresql curl lftp ca-certificates python3 python3-torch python3-numpy \
	chromium chromium-driver dbus-daemon lintian adduser

deps: ## install the Debian packages texgrid needs, PyTorch (the test and bench peer) included
	$(SUDO) apt-get update -qq || (sleep 10 && $(SUDO) apt-get update -qq)
	$(APT) $(DEB_PKGS)
	@# Node's npm fetches the ONNX Runtime library; keep an npm that is already there.
	command -v npm >/dev/null || $(APT) nodejs npm

ort: $(TEXGRID_ORT_LIB) ## fetch the ONNX Runtime shared library into .cache/onnxruntime

$(TEXGRID_ORT_LIB):
	bash trainer/scripts/fetch-onnxruntime.sh $(ORT_DIR)

build: ## build every binary into bin/
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS_TAGS) -o $(BIN)/ ./trainer/cmd/... ./dataset-ftp/cmd/... ./project-server/cmd/... ./volunteer-client/cmd/...

demo: build ort ## run the whole grid on 127.0.0.1 (DATA=DIR for a real dataset; KEEP=30m keeps the web UI up after the campaign)
	$(BIN)/texgrid-demo --bin $(BIN) $(if $(DATA),--data $(DATA),) $(if $(SIZE),--size $(SIZE),) $(if $(KEEP),--keep-serving $(KEEP),)

test: ort ## the whole suite, as CI runs it: test-short, then e2e (about 20 minutes on 2 cores)
	$(MAKE) --no-print-directory test-short
	$(MAKE) --no-print-directory e2e

test-short: ort ## every test but e2e: unit, integration, demo and fault runs, PostgreSQL, ONNX Runtime, pure-Go BLAS
	TEXGRID_REQUIRE_ORT=1 TEXGRID_REQUIRE_POSTGRES=1 TEXGRID_REQUIRE_TOOLS=1 TEXGRID_REQUIRE_DATA=1 TEXGRID_REQUIRE_BROWSER=1 \
		$(GO) test $(GOFLAGS_TAGS) -timeout $(TEST_TIMEOUT) -count=1 ./...
	CGO_ENABLED=0 $(GO) test -timeout $(TEST_TIMEOUT) -count=1 ./trainer/...

e2e: ort ## federated vs centralised accuracy on ../shared/data (about 16 minutes), appended to the results file
	TEXGRID_E2E_ACCURACY=1 TEXGRID_REQUIRE_DATA=1 TEXGRID_REQUIRE_TOOLS=1 \
		$(GO) test $(GOFLAGS_TAGS) -timeout 45m -count=1 -v -run TestFederatedMatchesCentralised ./project-server/internal/grid/ \
		| grep --line-buffered -v '^        '

compare: ort ## sync vs async and FedAvgM on kth-tips-grey with a 5x straggler (about an hour), results and plot in project-server/internal/grid/testdata
	TEXGRID_COMPARE=1 TEXGRID_REQUIRE_DATA=1 TEXGRID_REQUIRE_TOOLS=1 \
		$(GO) test $(GOFLAGS_TAGS) -timeout 4h -count=1 -v -run TestCompareModes ./project-server/internal/grid/ \
		| grep --line-buffered -v '^        '

bench: build ort ## benchmarks against their peers (PyTorch, ONNX Runtime), printing ratios
	SAVE=1 bash trainer/bench/bench.sh
	$(GO) test $(GOFLAGS_TAGS) -run '^$$' -bench . -benchtime 3s ./project-server/... ./dataset-ftp/...

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(GOFLAGS_TAGS) ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(GOFLAGS_TAGS) ./...

VERSION ?= 0.1.0
DIST := $(CURDIR)/dist

package: ## build the texgrid-volunteer and texgrid-server .deb packages into dist/
	$(GO) run ./project-server/cmd/texgrid-package --root $(CURDIR) --out $(DIST) --version $(VERSION) $(if $(TAGS),--tags $(TAGS),)

clean: ## remove build output
	rm -rf $(BIN) $(DIST)
