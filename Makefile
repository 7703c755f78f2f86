# minimon: run `make help` for the targets.
GO        ?= go
SIM_BUDGET_SECONDS ?= 90
PROTO_DIR := api/proto/minimon/v1
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: help build demo test test-long bench proto verify-proto lint fmt vet fuzz

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

build: ## bin/monitord and bin/monctl (static: CGO_ENABLED=0, -trimpath, VERSION via ldflags)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/ ./cmd/monitord ./cmd/monctl

demo: build ## 3 monitors on 127.0.0.1:6789-6791 in the foreground, data and logs in ./demo-data; Ctrl-C stops
	BIN=./bin DEMO_DIR=./demo-data ./scripts/demo.sh

vet: ## go vet and a gofmt check
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

test: vet ## everything CI runs: vet, gofmt, unit + simulator tests with -race
	SIM_BUDGET_SECONDS=$(SIM_BUDGET_SECONDS) $(GO) test -race -count=1 -timeout 15m ./...

test-long: vet ## thousands of simulator seeds (SIM_SEEDS, default 3000)
	SIM_SEEDS=$${SIM_SEEDS:-3000} SIM_BUDGET_SECONDS=$${SIM_BUDGET_SECONDS:-3600} \
	  $(GO) test -count=1 -timeout 3h ./internal/sim/...

bench: ## benchmarks (speed is judged here, never in unit tests)
	$(GO) test -run '^$$' -bench . -benchmem ./...

fuzz: ## run every fuzz target for FUZZTIME (default 20s) each
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-20s} $$pkg || exit 1; \
	  done; done

proto: ## regenerate the committed protobuf code (needs protoc: apt-get install protobuf-compiler libprotobuf-dev)
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I $(PROTO_DIR) -I /usr/include \
	  --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
	  --plugin=protoc-gen-go-grpc="$$($(GO) tool -n protoc-gen-go-grpc)" \
	  --go_out=$(PROTO_DIR) --go_opt=paths=source_relative \
	  --go-grpc_out=$(PROTO_DIR) --go-grpc_opt=paths=source_relative \
	  $(PROTO_DIR)/*.proto

verify-proto: proto ## regenerate and fail if the committed code differs
	git diff --exit-code -- $(PROTO_DIR)

lint: ## golangci-lint v2 (installs it; takes minutes)
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0 run ./...

.PHONY: measure
measure: build ## figures on this machine: cold start, failover after kill -9 of the leader, rejoin (RUNS, default 5)
	$(GO) run ./test/e2e/measure -bin ./bin -runs $${RUNS:-5}
