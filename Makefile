# hub: `make run` runs the hub, `make test` runs the tests.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
CONFIG    ?= configs/hub.yaml
FUZZTIME  ?= 5s
PKGS      := ./...

.PHONY: build run responders cluster demo test test-unit test-cluster fuzz-short fuzz bench bench-audit bench-peers chaos lint fmt clean

build: ## build bin/hub
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/hub ./cmd/hub

run: build ## run the hub with configs/hub.yaml (embedded JetStream, no outside services)
	./bin/hub serve -config $(CONFIG)

responders: ## the example services behind the dashboard gather route (make run in another terminal)
	go run ./examples/dashboard -server nats://127.0.0.1:4222 -delay 50ms

cluster: ## a local 3-node cluster of hubs (configs/cluster-*.yaml); Ctrl-C stops it
	./scripts/cluster.sh

demo: ## mailpit + the hub + example receiver and responders, with sample events (Ctrl-C stops)
	./scripts/demo.sh

test: lint test-unit test-cluster fuzz-short ## everything CI runs

test-unit:
	$(GO) test -race -count=1 -timeout 8m $(PKGS)

# Every Fuzz function in a *_test.go file, found by name: go test fuzzes one
# target of one package per run, so they run one after the other. A crasher
# is written to the package's testdata/fuzz/<target>/ and fails the run.
test-cluster: ## the 3-node cluster kill test (three hub processes, not race-built; 20-40 s; part of make test)
	HUB_CLUSTER_TEST=1 $(GO) test -count=1 -timeout 10m -run TestClusterNodeKilled -v ./cmd/hub

fuzz-short: ## each fuzz target for FUZZTIME (default 5s)
	@set -e; for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for fn in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | cut -d' ' -f2 | sort -u); do \
	    echo "fuzz $$dir $$fn for $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$dir; \
	  done; \
	done

fuzz: ## each fuzz target for longer (default 60s): make fuzz FUZZTIME=5m
	$(MAKE) fuzz-short FUZZTIME=$(if $(filter command line environment,$(origin FUZZTIME)),$(FUZZTIME),60s)

bench: ## benchmarks, benchstat-comparable output
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $(PKGS) | tee bench.txt

bench-audit: ## issue 6's figure: fan-out with the audit trail on vs off (about 2 min)
	./scripts/bench-audit.sh

bench-peers: ## the hub vs raw JetStream and RabbitMQ, plus scale curves; writes docs/peers.md (installs rabbitmq-server if missing)
	./scripts/bench-peers.sh

chaos: ## fault scenarios against the real hub binary, each ending in a ledger (about 6 minutes; docs/reliability.md)
	HUB_CHAOS=1 $(GO) test -count=1 -v -timeout 45m -run '^TestChaos' ./chaos/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin data bench.txt
