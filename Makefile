# moat: build, test and benchmark. `make help` lists the targets.

GO        ?= go
PREFIX    ?= /usr/local
BINDIR    ?= bin
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
# A count, not a duration: Go 1.26's fuzz coordinator can fail a target with
# a bare "context deadline exceeded" when a duration runs out mid-exec
# (go.dev/issue/75804, fixed in Go 1.27).
FUZZTIME  ?= 20000x
# Fuzz targets run briefly by `make test`: package:target.
FUZZ      := ./policy:FuzzParse ./policy:FuzzMatchPath ./policy:FuzzMatchHost ./policy/engine:FuzzDecide ./confine:FuzzParsePlan

BINARIES  := moat moat-sidecar
# moat-init is built static (CGO_ENABLED=0) once its directory exists.
ifneq ($(wildcard cmd/moat-init),)
BINARIES  += moat-init
endif
# moat links libcontainer: cgo for nsenter, libseccomp (libseccomp-dev)
# through the seccomp tag, as runc is built. A container start execs moat
# at least twice, so its start-up counts:
# - urfave_cli_no_docs leaves out urfave/cli's man page and Markdown
#   generators (as runc does): their Markdown parser's package
#   initialisation cost about 2 ms of every exec;
# - it is linked statically, as runc's release binaries are (netgo and
#   osusergo keep glibc's NSS out): no dynamic loader at every exec, about
#   1.7 ms on the test VM.
MOAT_TAGS    ?= seccomp urfave_cli_no_docs netgo osusergo
MOAT_LDFLAGS ?= -extldflags -static
# Where scripts/build-runtime-tools.sh caches the runtime-tools suite.
MOAT_CI_CACHE ?= /var/tmp/moat-ci

.PHONY: all build test unit fuzz conformance bench bench-start bench-network install lint clean help demo

all: build

build: $(addprefix $(BINDIR)/,$(BINARIES)) ## Build the binaries into bin/

$(BINDIR)/%: FORCE
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

$(BINDIR)/moat: FORCE
	CGO_ENABLED=1 $(GO) build -trimpath -tags '$(MOAT_TAGS)' -ldflags '$(LDFLAGS) $(MOAT_LDFLAGS)' -o $@ ./cmd/moat

$(BINDIR)/moat-init: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/moat-init

# The sidecar drops its privileges on every thread (AllThreadsSyscall),
# which cgo disables.
$(BINDIR)/moat-sidecar: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/moat-sidecar

FORCE:

test: lint unit fuzz conformance ## Run every test tier (root tests skip with a message when not root)

unit: ## Run the unit, root and end-to-end Go tests
	$(GO) test -count=1 -timeout 40m ./...

fuzz: ## Run each fuzz target for FUZZTIME
	@set -e; for t in $(FUZZ); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

conformance: ## Run the OCI runtime-tools suite against runc and moat (sandbox off); root only
	@if [ "$$(id -u)" != 0 ]; then echo "conformance: skipped (needs root)"; exit 0; fi; \
	suite=$$(MOAT_CI_CACHE=$(MOAT_CI_CACHE) ./scripts/build-runtime-tools.sh) && \
	MOAT_CONFORMANCE=1 MOAT_RUNTIME_TOOLS=$$suite $(GO) test -count=1 -timeout 30m -v -run '^TestConformance$$' ./test/e2e/

bench: bench-start bench-network ## Run the benchmarks and print the numbers docs/benchmarks.md records
	$(GO) test -run '^$$' -bench . -benchtime 20000x ./policy/engine/

bench-start: $(BINDIR)/moat $(BINDIR)/moat-init $(BINDIR)/moat-sidecar ## Container start and exec: moat vs runc, /bin/true (root)
	$(GO) run ./bench/start -moat $(BINDIR)/moat -n $(or $(BENCH_RUNS),30)

bench-network: $(BINDIR)/moat $(BINDIR)/moat-init $(BINDIR)/moat-sidecar ## Proxy throughput, tunnels/s vs Squid, identity latency, sidecar RSS (root, squid)
	$(GO) run ./bench/network -moat $(BINDIR)/moat -rounds $(or $(BENCH_ROUNDS),5)

demo: build ## Show moat deciding real requests against an example policy
	@./scripts/demo.sh

install: build ## Install the binaries into $(PREFIX)/bin
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(addprefix $(BINDIR)/,$(BINARIES)) $(DESTDIR)$(PREFIX)/bin/

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean: ## Remove build outputs
	rm -rf $(BINDIR)

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'
