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

test-long: vet ## thousands of simulator seeds (SIM_SEEDS, default 3000), then the long fault schedule
	SIM_SEEDS=$${SIM_SEEDS:-3000} SIM_BUDGET_SECONDS=$${SIM_BUDGET_SECONDS:-3600} \
	  $(GO) test -count=1 -timeout 3h ./internal/sim/...
	$(MAKE) test-faults FAULTS_LONG=1

.PHONY: test-faults
test-faults: ## real monitords under kill -9, pauses and nft partitions (root); SEED=... replays, FAULTS_LONG=1 the long schedule, FAULTS_RUN=regexp picks tests
	SEED=$(SEED) FAULTS_LONG=$(FAULTS_LONG) MINIMON_FAULTS_REQUIRED=1 \
	  $(GO) test -race -count=1 -v -timeout 2h -run '$(or $(FAULTS_RUN),.)' ./test/robustness/

bench: ## benchmarks (speed is judged here, never in unit tests)
	$(GO) test -run '^$$' -bench . -benchmem ./...

fuzz: ## run every fuzz target for FUZZTIME (default 20s) each; a failure is reported at the end (crashers go to the package's testdata/fuzz)
	@failed=""; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-20s} $$pkg || failed="$$failed $$pkg.$$f"; \
	  done; done; \
	  if [ -n "$$failed" ]; then echo "fuzz targets failed:$$failed"; exit 1; fi

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

# Docker (deploy/): a FROM scratch image of the static binaries; nothing is pulled.
IMAGE      ?= minimon
IMAGE_TAG  ?= dev
DOCKER_CTX := bin/docker
MINIMON_HOST_PORT_BASE ?= 6789
# `docker compose` (v2 plugin) when present, else docker-compose (v1, Debian's package).
COMPOSE    ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_FILE_ARGS := -f deploy/docker-compose.yml -p minimon
COMPOSE_ENV := MINIMON_IMAGE=$(IMAGE):$(IMAGE_TAG) \
	MINIMON_HOST_PORT_A=$(MINIMON_HOST_PORT_BASE) \
	MINIMON_HOST_PORT_B=$$(($(MINIMON_HOST_PORT_BASE)+1)) \
	MINIMON_HOST_PORT_C=$$(($(MINIMON_HOST_PORT_BASE)+2))

.PHONY: docker compose-up compose-down test-compose
docker: build ## image minimon:dev (IMAGE, IMAGE_TAG): FROM scratch with the static bin/monitord and bin/monctl, uid 65532
	rm -rf $(DOCKER_CTX) && mkdir -p $(DOCKER_CTX)/data
	cp bin/monitord bin/monctl $(DOCKER_CTX)/
	docker build -f deploy/Dockerfile --label org.opencontainers.image.version=$(VERSION) -t $(IMAGE):$(IMAGE_TAG) $(DOCKER_CTX)

compose-up: docker ## 3 monitors in docker compose, client ports 127.0.0.1:MINIMON_HOST_PORT_BASE.. (default 6789-6791)
	$(COMPOSE_ENV) $(COMPOSE) $(COMPOSE_FILE_ARGS) up -d

compose-down: ## stop the compose cluster and delete its volumes
	$(COMPOSE_ENV) $(COMPOSE) $(COMPOSE_FILE_ARGS) down -v --remove-orphans

test-compose: docker ## compose cluster under faults: leader stop, partitions, rejoin (needs docker; ~30 s)
	IMAGE=$(IMAGE):$(IMAGE_TAG) COMPOSE="$(COMPOSE)" ./test/compose/run.sh
