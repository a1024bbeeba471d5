# Godwit. `make demo` and `make test` are all a newcomer needs; both install what is missing.
SHELL := /bin/bash
GO ?= go
BIN := bin/godwit
GUEST := build/guest
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/godwit/godwit/internal/cli.Version=$(VERSION)
GO_SOURCES := $(shell find cmd internal -name '*.go' -not -name '*_test.go' 2>/dev/null) go.mod go.sum

.PHONY: all deps build guest test unit integration lint demo bench clean
all: build

deps:
	@bash scripts/deps.sh

$(BIN): $(GO_SOURCES)
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/godwit

build: $(BIN)

guest: deps
	@bash scripts/build-guest.sh $(GUEST)

lint:
	@out=$$(gofmt -l cmd internal test); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Unit tests, then the integration tests that bring up labs of real namespaces, agents,
# QEMU guests and a center.
# Each fuzz target runs 3000 inputs (a count, not a time: a time limit can expire while
# a worker is mid-input and fail the run).
test: deps guest build lint
	$(GO) test -count=1 -timeout 15m ./internal/... ./cmd/...
	fail=0; for pkg in ./internal/api ./internal/center ./internal/agent ./internal/audit ./internal/ticket ./internal/qemu; do for fz in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do $(GO) test -run '^$$' -fuzz "^$$fz\$$" -fuzztime 3000x -fuzzminimizetime 1x $$pkg || fail=1; done; done; exit $$fail
	GODWIT_BIN=$(CURDIR)/$(BIN) GODWIT_GUEST_DIR=$(CURDIR)/$(GUEST) $(GO) test -count=1 -timeout 30m ./test/integration/...

unit: build
	$(GO) test -count=1 ./internal/... ./cmd/...

integration: deps guest build
	GODWIT_BIN=$(CURDIR)/$(BIN) GODWIT_GUEST_DIR=$(CURDIR)/$(GUEST) $(GO) test -count=1 -timeout 30m -v ./test/integration/...

demo: deps guest build
	@bash scripts/demo.sh $(CURDIR)/$(BIN) $(CURDIR)/$(GUEST)

bench: deps guest build
	$(GO) test -count=1 -run '^$$' -bench 'Recommend1000Hosts' ./internal/placement/
	GODWIT_BIN=$(CURDIR)/$(BIN) GODWIT_GUEST_DIR=$(CURDIR)/$(GUEST) $(GO) test -count=1 -timeout 45m -run '^$$' -bench . -benchtime 1x ./test/bench/...

clean:
	rm -rf bin build
