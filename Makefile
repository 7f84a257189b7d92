# hub: `make run` runs the hub, `make test` runs the tests.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
CONFIG    ?= configs/hub.yaml
FUZZTIME  ?= 5s
PKGS      := ./...

.PHONY: build run responders demo test test-unit fuzz-short fuzz bench lint fmt clean

build: ## build bin/hub
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/hub ./cmd/hub

run: build ## run the hub with configs/hub.yaml (embedded JetStream, no outside services)
	./bin/hub serve -config $(CONFIG)

responders: ## the example services behind the dashboard gather route (make run in another terminal)
	go run ./examples/dashboard -server nats://127.0.0.1:4222 -delay 50ms

demo: ## mailpit + the hub + example receiver and responders, with sample events (Ctrl-C stops)
	./scripts/demo.sh

test: lint test-unit fuzz-short ## everything CI runs

test-unit:
	$(GO) test -race -count=1 -timeout 8m $(PKGS)

fuzz-short: ## each fuzz target briefly
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEvent$$' -fuzztime $(FUZZTIME) ./hub

fuzz: ## each fuzz target for longer: make fuzz FUZZTIME=60s
	$(MAKE) fuzz-short FUZZTIME=$(FUZZTIME)

bench: ## benchmarks, benchstat-comparable output
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $(PKGS) | tee bench.txt

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin data bench.txt
