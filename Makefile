# keyplane — the two commands a newcomer runs are `make demo` and `make test`.
# Everything they need (PostgreSQL server binaries, golangci-lint, gotestsum, buf) is installed here.

SHELL      := /bin/bash
BIN        := $(CURDIR)/.bin
BUF_VERSION         := v1.75.0
GOLANGCI_LINT_VERSION := v2.15.0
GOTESTSUM_VERSION     := v1.13.0
PROTOC_GEN_DOC_VERSION := v1.5.1
GO_TEST_FLAGS ?= -race -timeout 14m -parallel 4 -p 3
# The longest packages first: go test runs three packages at a time (-p 3: one more
# than CPUs, as the cluster tests mostly wait) in this order, so the region package
# (CPU-bound) overlaps the chaos drills and the cluster tests instead of queueing
# behind them.
TEST_PACKAGES ?= ./region/ ./chaos/ ./deploy/ ./...
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION   ?= $(shell git rev-parse HEAD 2>/dev/null)

export PATH := $(BIN):$(PATH)

.PHONY: all build image demo test test-race-nodes vet lint unit postgres tools generate fuzz bench bench-go bench-peers clean help

all: build

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-10s %s\n", $$1, $$2 }'

build: ## build ./.bin/keyplane
	go build -o $(BIN)/keyplane ./cmd/keyplane

image: ## build the OCI image (static binary, CA certificates, nonroot; no shell) into $(BIN)/keyplane-image.tar, and test it
	go run ./deploy/image/mkimage --out $(BIN)/keyplane-image.tar --version $(VERSION) --revision $(REVISION)
	go test -tags image -count=1 ./deploy/image/

demo: postgres build ## run a local cluster on a private PostgreSQL (Ctrl-C stops it)
	$(BIN)/keyplane demo $(DEMO_FLAGS)

test: postgres vet lint unit ## vet, golangci-lint and the race-enabled test suite (CI runs it with GOFLAGS=-count=1)

vet:
	go vet ./...

lint: $(BIN)/golangci-lint ## golangci-lint with .golangci.yml (staticcheck, the package import table, the house rules)
	$(BIN)/golangci-lint run ./...

# Three test packages run at a time (-p 3), and within a package up to 4 parallel tests at once (-parallel 4:
# most tests wait on PostgreSQL and HTTP, not the CPU, so the default of one per CPU
# left the largest package, region, the long pole); the packages that start clusters
# share one keyplane binary built here. The test binaries run with -race; the cluster
# nodes they start do not (docs/decisions/0020-race-detector-budget.md): the same code
# runs race-checked in process in the region and routing packages, and
# `make test-race-nodes` runs the cluster packages with race-enabled nodes.
# The ten slowest tests are printed at the end, pass or fail.
unit: $(BIN)/gotestsum $(BIN)/promtool
	go build -o $(BIN)/test/keyplane ./cmd/keyplane
	KEYPLANE_TEST_BINARY=$(BIN)/test/keyplane $(BIN)/gotestsum --format pkgname --jsonfile $(BIN)/test.json \
	  -- $(GO_TEST_FLAGS) $(TEST_PACKAGES) ; status=$$?; \
	echo "slowest tests:"; $(BIN)/gotestsum tool slowest --jsonfile $(BIN)/test.json --num 10 --threshold 1s; \
	exit $$status

test-race-nodes: postgres $(BIN)/gotestsum ## the cluster packages (drills, multi-region, demo, cmd) with race-enabled nodes: slower than make test
	go build -race -o $(BIN)/test/keyplane-race ./cmd/keyplane
	KEYPLANE_TEST_BINARY=$(BIN)/test/keyplane-race $(BIN)/gotestsum --format pkgname \
	  -- $(GO_TEST_FLAGS) ./chaos/ ./deploy/ ./deploy/demo/ ./cmd/keyplane/

$(BIN)/promtool: ## promtool for the alert rules' tests, from Debian's prometheus package (no service installed)
	deploy/ensure-promtool.sh $(BIN)

bench: postgres build ## every load-bench workload next to its raw-SQL baseline (BENCH_FLAGS, default 10s each); report in .bin/bench/
	$(BIN)/keyplane bench run --workload all --duration 10s --json $(BIN)/bench/results.json \
	  --report $(BIN)/bench/report.md --svg $(BIN)/bench $(BENCH_FLAGS)

bench-go: postgres ## the go test benchmarks: each layer of a decision, token/check paths, routes (BENCHTIME, default 5s; BENCH, default .); a per-layer table at the end
	@mkdir -p $(BIN)
	set -o pipefail; go test ./bench -run '^$$' -bench "$${BENCH:-.}" -benchmem -benchtime $${BENCHTIME:-5s} | tee $(BIN)/bench-go.txt
	@awk '/^BenchmarkLayers\// { name = $$1; sub(/^BenchmarkLayers\//, "", name); sub(/-[0-9]+$$/, "", name); ns = al = by = "-"; \
	    for (i = 3; i < NF; i++) { if ($$(i+1) == "ns/op") ns = sprintf("%.1f", $$i / 1000); \
	      if ($$(i+1) == "allocs/op") al = $$i; if ($$(i+1) == "B/op") by = $$i }; \
	    rows[++n] = sprintf("%-32s %10s %10s %10s", name, ns, al, by) } \
	  END { if (n) { printf "\nper-layer cost of one decision, one call at a time (BenchmarkLayers)\n%-32s %10s %10s %10s\n", \
	    "layer", "us/op", "allocs/op", "B/op"; for (i = 1; i <= n; i++) print rows[i] } }' $(BIN)/bench-go.txt

bench-peers: postgres build ## fresh checks of keyplane, OpenFGA, SpiceDB and the raw-SQL floor side by side (PEERS_FLAGS); builds the peers into .bin/peers once; report in .bin/peers/
	$(BIN)/keyplane bench peers --bin-dir $(BIN)/peers --json $(BIN)/peers/peers.json \
	  --report $(BIN)/peers/peers.md --svg $(BIN)/peers/peers.svg $(PEERS_FLAGS)

fuzz: ## run every fuzz target for FUZZTIME each (default 20s)
	@for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$spec/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    go test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-20s} $$spec || exit 1; \
	  done; \
	done

postgres: ## install the PostgreSQL server binaries, curl and chromium (the browser test) when missing
	@deploy/ensure-postgres.sh

tools: $(BIN)/golangci-lint $(BIN)/gotestsum $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-connect-go $(BIN)/protoc-gen-doc

$(BIN)/golangci-lint:
	GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

$(BIN)/gotestsum:
	GOBIN=$(BIN) go install gotest.tools/gotestsum@$(GOTESTSUM_VERSION)

$(BIN)/buf:
	GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

# The plugins' versions come from go.mod, so generated code matches the runtime.
$(BIN)/protoc-gen-go: go.mod
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$$(go list -m -f '{{.Version}}' google.golang.org/protobuf)

$(BIN)/protoc-gen-connect-go: go.mod
	GOBIN=$(BIN) go install connectrpc.com/connect/cmd/protoc-gen-connect-go@$$(go list -m -f '{{.Version}}' connectrpc.com/connect)

$(BIN)/protoc-gen-doc:
	GOBIN=$(BIN) go install github.com/pseudomuto/protoc-gen-doc/cmd/protoc-gen-doc@$(PROTOC_GEN_DOC_VERSION)

generate: tools ## regenerate region/gen and docs/api/api.md from region/proto
	$(BIN)/buf lint
	$(BIN)/buf generate
	$(BIN)/buf generate --template buf.gen.doc.yaml

clean:
	rm -rf $(BIN)
