# ExactOnce build, test and lint entry points. `make help` lists them.

GO          ?= go
BIN         ?= bin
# staticcheck 2026.2.2 supports Go 1.26; pinned so CI is reproducible.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# benchstat compares two `make bench-go` outputs; pinned like staticcheck.
BENCHSTAT   ?= golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
TEST_TIMEOUT ?= 15m
# promtool comes with Debian's prometheus package (.ci/run installs it).
PROMTOOL    ?= promtool
LDFLAGS     ?= -s -w
# The version `exactonced --version`, `exactonce version`, GET /v1/cluster
# and exactonce_build_info report (internal/buildinfo): the git tag, or
# what `git describe` says between tags; "dev" outside a git checkout.
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILDINFO    = github.com/exactonce/exactonce/internal/buildinfo
VERSION_LDFLAGS = -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).revision=$(REVISION)

.PHONY: all build test lint fmt run clean help print-staticcheck print-version install check-rules

all: build

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## static binaries bin/exactonced and bin/exactonce
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS) $(VERSION_LDFLAGS)' -o $(BIN)/exactonced ./cmd/exactonced
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS) $(VERSION_LDFLAGS)' -o $(BIN)/exactonce ./cmd/exactonce

test: ## go vet and every test
	$(GO) vet ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

lint: ## gofmt check, go vet, staticcheck
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

check-rules: ## promtool: the scrape config, the alert rules and their unit tests (deploy/prometheus*)
	$(PROMTOOL) check config deploy/prometheus.yml
	$(PROMTOOL) check rules deploy/prometheus/exactonce-alerts.yml
	$(PROMTOOL) test rules deploy/prometheus/exactonce-alerts_test.yml

fmt: ## gofmt every Go file
	gofmt -w .

run: ## a single dev node on 127.0.0.1:8080 (prints the dev client's credentials)
	$(GO) run ./cmd/exactonced --dev

clean: ## remove built binaries
	rm -rf $(BIN)

# Install on an on-prem host (docs/deploy.md, "systemd on on-prem hosts"):
# the binaries of `make build`, the docs the unit's Documentation= names,
# the unit, and the environment template (mode 0600; an existing one is
# kept). DESTDIR stages the files elsewhere.
PREFIX  ?= /usr/local
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/exactonce
DOCDIR  ?= $(PREFIX)/share/doc/exactonce
INSTALL_DOCS = docs/deploy.md docs/operations.md docs/upgrade.md docs/security.md docs/api.md
install: ## install binaries, docs, systemd unit and env template (PREFIX=/usr/local DESTDIR=)
	@test -x $(BIN)/exactonced -a -x $(BIN)/exactonce || { echo "run make build first" >&2; exit 2; }
	install -d -m 0755 $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BIN)/exactonced $(BIN)/exactonce $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 $(INSTALL_DOCS) $(DESTDIR)$(DOCDIR)/
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' -e 's|/usr/local/share/doc/exactonce/|$(DOCDIR)/|g' \
		-e 's|/etc/exactonce/|$(CONFDIR)/|g' deploy/exactonced.service > $(DESTDIR)$(UNITDIR)/exactonced.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/exactonced.service
	install -d -m 0700 $(DESTDIR)$(CONFDIR)
	@if [ -e $(DESTDIR)$(CONFDIR)/exactonced.env ]; then echo "kept $(DESTDIR)$(CONFDIR)/exactonced.env"; \
	else install -m 0600 deploy/exactonced.env $(DESTDIR)$(CONFDIR)/exactonced.env; fi

print-staticcheck:
	@echo $(STATICCHECK)

print-version: ## the version and revision `make build` stamps into the binaries
	@echo $(VERSION) $(REVISION)

# Local three-node cluster on loopback (scripts/cluster.sh): node N serves
# HTTP on 127.0.0.1:808N, Raft on 830N, gossip on 840N, data in .cluster/.
.PHONY: cluster cluster-stop test-cluster
cluster: ## three nodes on loopback; prints their URLs and a dev client
	scripts/cluster.sh start

cluster-stop: ## stops exactly the nodes `make cluster` started
	scripts/cluster.sh stop

# Container tests (internal/containertest): a scratch image, three nodes under
# docker-compose, leader killed, a follower cut off and reconnected, all
# restarted. Needs a Docker engine, docker-compose and root (the secret files
# are handed to the image's non-root user, uid 65532, as docs/deploy.md does).
test-cluster: ## three containers: kill, partition, restart; no acknowledged write lost
	$(GO) test -count=1 -tags container -timeout 15m -v ./internal/containertest/

# Chaos harness (docs/chaos.md): a real three-node cluster under faults,
# checked for linearizability and exactly-once. Runs as root for network
# namespaces (partitions); without root it falls back to loopback and skips
# partitions. DURATION is the total workload time over the scenarios. The
# disk faults (power-loss) put each node's data dir on a FUSE mount
# (internal/faultfs): /dev/fuse and fusermount3 (package fuse3), else they
# are skipped.
DURATION  ?= 6m
SEED      ?= 0
SCENARIOS ?= kill,pause,partition,snapshot,clock,power-loss
CHAOS_DEPS = if [ "$$(id -u)" = 0 ] && ! { command -v ip && command -v iptables && command -v fusermount3; } >/dev/null 2>&1; then \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables fuse3; fi

.PHONY: chaos chaos-selftest
chaos: ## fault injection against a 3-node cluster; fails on any anomaly (DURATION=6m SEED=n SCENARIOS=...)
	@$(CHAOS_DEPS)
	$(GO) build -o $(BIN)/exactonce-chaos ./cmd/exactonce-chaos
	$(BIN)/exactonce-chaos -seed $(SEED) -duration $(DURATION) -scenarios $(SCENARIOS) $(CHAOS_FLAGS)

chaos-selftest: ## the harness must report the double consume of a cluster built with -tags chaosbug
	@$(CHAOS_DEPS)
	$(GO) build -o $(BIN)/exactonce-chaos ./cmd/exactonce-chaos
	$(BIN)/exactonce-chaos -seed $(SEED) -duration 20s -scenarios none -tags chaostest,chaosbug -expect-anomaly $(CHAOS_FLAGS)

# The same harness against three containers (a FROM-scratch image of a
# static exactonced under docker-compose, project exactoncechaos, networks
# 172.30.10.0/24 and 172.30.20.0/24: apart from test-cluster's). Needs a
# Docker engine and docker-compose (or `docker compose`). SCENARIOS and
# DURATION given on the command line or in the environment win over the
# defaults below.
CONTAINER_SCENARIOS ?= kill,pause,partition
CONTAINER_DURATION  ?= 3m
CC_SCENARIOS = $(if $(filter command line environment,$(origin SCENARIOS)),$(SCENARIOS),$(CONTAINER_SCENARIOS))
CC_DURATION  = $(if $(filter command line environment,$(origin DURATION)),$(DURATION),$(CONTAINER_DURATION))

# Rolling upgrade (docs/upgrade.md): builds the commit that declared format
# version 1 (or UPGRADE_BASE=<commit>) from the git history and this tree,
# runs three nodes of the old build under the chaos workload on loopback,
# replaces them one at a time, and fails on any anomaly. Skips in a shallow
# clone. SEED=n replays a run.
.PHONY: upgrade-test
upgrade-test: ## rolling upgrade from an earlier commit to this tree under the chaos workload, ~2 min (UPGRADE_BASE=commit SEED=n)
	$(GO) test -count=1 -tags upgrade -run '^TestRollingUpgrade$$' -timeout 10m -v ./internal/chaos/

.PHONY: chaos-containers
chaos-containers: ## the chaos harness against three containers (SCENARIOS=kill,pause,partition DURATION=3m)
	$(GO) build -o $(BIN)/exactonce-chaos ./cmd/exactonce-chaos
	$(BIN)/exactonce-chaos -backend containers -seed $(SEED) -duration $(CC_DURATION) -scenarios $(CC_SCENARIOS) $(CHAOS_FLAGS)

.PHONY: bench
bench: ## ExactOnce vs PostgreSQL (sync standby, one node) and etcd on loopback, 8-12 min (BENCH_FLAGS=-million for one million actions; see docs/performance.md)
	scripts/bench.sh $(BENCH_FLAGS)

# The Go benchmarks of the apply path (fsm, cluster) and the HTTP handlers
# (httpapi), COUNT runs each, so that benchstat can tell a change from noise.
COUNT ?= 10
BENCH_GO_OUT ?= $(BIN)/bench-go.txt
.PHONY: bench-go benchstat
bench-go: ## Go benchmarks (apply path, handlers) COUNT times into bin/bench-go.txt, for benchstat (~7 min at COUNT=10)
	@mkdir -p $(dir $(BENCH_GO_OUT))
	@# bash for pipefail: a failing benchmark fails the target despite tee.
	bash -o pipefail -c "$(GO) test -run '^$$' -bench . -benchmem -count $(COUNT) ./fsm ./cluster ./httpapi | tee $(BENCH_GO_OUT)"

benchstat: ## compare two bench-go outputs: make benchstat OLD=old.txt NEW=new.txt
	@test -n "$(OLD)" -a -n "$(NEW)" || { echo "usage: make benchstat OLD=old.txt NEW=new.txt" >&2; exit 2; }
	$(GO) run $(BENCHSTAT) $(OLD) $(NEW)

# Soak (docs/performance.md, "Soak"): a node started from bin/exactonced
# with a short retention under create + consume cycles for SOAK_DURATION;
# prints elapsed time, actions, data dir, state file and RSS as it goes,
# then writes docs/soak.csv and draws docs/soak.png. Not part of CI or
# make test. SOAK_NODES=3 runs three nodes on loopback (ports 61100-61302).
SOAK_DURATION  ?= 10m
SOAK_RETENTION ?= 30s
SOAK_NODES     ?= 1
# SOAK_FLAGS passes more flags (go run ./cmd/exactonce-soak -h lists them).
SOAK_FLAGS     ?=
.PHONY: soak
soak: build ## data dir and RSS under endless create + consume with a short retention: docs/soak.csv, docs/soak.png (SOAK_DURATION=10m SOAK_RETENTION=30s SOAK_NODES=1)
	$(GO) run ./cmd/exactonce-soak -bin $(BIN)/exactonced -nodes $(SOAK_NODES) -duration $(SOAK_DURATION) -retention $(SOAK_RETENTION) $(SOAK_FLAGS)
