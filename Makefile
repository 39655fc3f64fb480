# ExactOnce build, test and lint entry points. `make help` lists them.

GO          ?= go
BIN         ?= bin
# staticcheck 2026.2.2 supports Go 1.26; pinned so CI is reproducible.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_TIMEOUT ?= 15m
LDFLAGS     ?= -s -w

.PHONY: all build test lint fmt run clean help print-staticcheck

all: build

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## static binaries bin/exactonced and bin/exactonce
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/exactonced ./cmd/exactonced
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/exactonce ./cmd/exactonce

test: ## go vet and every test
	$(GO) vet ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

lint: ## gofmt check, go vet, staticcheck
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './vendor/*'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

fmt: ## gofmt every Go file
	gofmt -w $$(find . -name '*.go' -not -path './vendor/*')

run: ## a single dev node on 127.0.0.1:8080 (prints the dev client's credentials)
	$(GO) run ./cmd/exactonced --dev

clean: ## remove built binaries
	rm -rf $(BIN)

print-staticcheck:
	@echo $(STATICCHECK)
