# SPDX-License-Identifier: Apache-2.0
# northstar — see README.md. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
GO ?= go
BIN := bin
PKGS := ./...
# The example is a module of its own, so its MQTT libraries stay out of the
# product's go.mod; every target that builds, vets or tests runs it too.
EXAMPLE := examples/mqtt
CMDS := $(notdir $(patsubst %/main.go,%,$(wildcard cmd/*/main.go)))
GOFLAGS_TEST ?= -count=1
# The commands with C in them (shim/fastpath, hook/agenthook/fastpath),
# which scripts/build-cgo.sh builds for make build, make deb and the tests
# alike.
CGO_CMDS := containerd-shim-northstar-v2 northstar-agent-hook
# Short fuzz runs of the parsers of untrusted input, part of `make test`.
# A count, not a duration: with a duration Go 1.26's fuzz coordinator can
# fail a clean run with "context deadline exceeded" at the deadline
# (golang/go#75804, fixed in 1.27), as it did here once in CI.
FUZZTIME ?= 50000x
# `make deb`: northstar_$(DEB_VERSION)_<arch>.deb in $(DEB_OUT).
DEB_VERSION ?= 0.1.0
DEB_OUT ?= dist

export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build deb setup test test-unit test-integration fuzz lint bench demo clean

all: build

build:
	@mkdir -p $(BIN)
	@# Static, cgo-free binaries: LD_PRELOAD and friends do nothing to them.
	@# One go command for all of them: it loads the packages once and links
	@# the binaries in parallel.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(filter-out $(CGO_CMDS),$(CMDS)))
	@# The shim's start and the agent hook have a fast path in C, run
	@# before the Go runtime: cgo, linked static all the same.
	for c in $(CGO_CMDS); do GO=$(GO) scripts/build-cgo.sh $$c $(BIN)/$$c || exit 1; done

# The Debian package, with nfpm (built once by scripts/install-tools.sh);
# checked with lintian and installed by TestDebPackage.
deb:
	DEB_VERSION=$(DEB_VERSION) packaging/deb/build.sh $(DEB_OUT)

# Installs the real stack (Debian packages, the test user) when run as root,
# then builds the tools only the tests use (containerd 2.x, crictl,
# spire-agent, spire-server, nfpm) into $(TOOLS_DIR), once. `make demo` needs none of them.
TOOLS_DIR ?= /opt/northstar-tools
export TOOLS_DIR
setup:
	@if [ "$$(id -u)" = 0 ]; then bash scripts/setup.sh && bash scripts/install-tools.sh; else echo "setup: not root, skipping package installation and the tools"; fi
	$(GO) mod download
	$(GO) -C $(EXAMPLE) mod download

test: setup lint build test-unit fuzz test-integration

test-unit:
	CGO_ENABLED=1 $(GO) test $(GOFLAGS_TEST) $(PKGS)
	@# The registry and the Workload API under the race detector: handlers
	@# of one container against its revocation (DESIGN.md §15); the control
	@# socket, which serves starts concurrently.
	CGO_ENABLED=1 $(GO) test -race -count=1 ./agent/registry/ ./agent/spiffe/ ./agent/api/ ./agent/control/...
	$(GO) -C $(EXAMPLE) test $(GOFLAGS_TEST) ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseState$$' -fuzztime $(FUZZTIME) ./hook
	$(GO) test -run '^$$' -fuzz '^FuzzPolicyFor$$' -fuzztime $(FUZZTIME) ./hook/delivery
	$(GO) test -run '^$$' -fuzz '^FuzzRewrite$$' -fuzztime $(FUZZTIME) ./hook/entry
	$(GO) test -run '^$$' -fuzz '^FuzzParseArgs$$' -fuzztime $(FUZZTIME) ./runcwrap
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./agent/token
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./audit
	$(GO) test -run '^$$' -fuzz '^FuzzTail$$' -fuzztime $(FUZZTIME) ./audit
	$(GO) test -run '^$$' -fuzz '^FuzzEntry$$' -fuzztime $(FUZZTIME) ./audit
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZTIME) ./agent/api
	$(GO) test -run '^$$' -fuzz '^FuzzValid$$' -fuzztime $(FUZZTIME) ./agent/identity
	$(GO) test -run '^$$' -fuzz '^FuzzSPIFFEPath$$' -fuzztime $(FUZZTIME) ./agent/identity
	$(GO) test -run '^$$' -fuzz '^FuzzMemory$$' -fuzztime $(FUZZTIME) ./agent/replay
	$(GO) test -run '^$$' -fuzz '^FuzzRegistrationKey$$' -fuzztime $(FUZZTIME) ./agent/registry
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) ./store
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeTPMBlob$$' -fuzztime $(FUZZTIME) ./seal/tpmseal
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./attest
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./attest/containerlog

test-integration: build
	$(GO) test $(GOFLAGS_TEST) -tags integration -timeout 15m -v ./integration/ 2>&1 | tee integration.out | grep -E '^(=== RUN|--- |\s+--- |PASS|FAIL|ok|panic)|_test.go' ; test $${PIPESTATUS[0]} -eq 0

# Side-by-side measurements (see README, Performance): the container-start
# comparisons from the integration harness, then the hook's phases as Go
# benchmarks. Writes bench.md; exits non-zero when a target is missed (after
# the whole table and the Go benchmarks are printed).
bench: setup build
	BENCH_OUT=$(CURDIR)/bench.md $(GO) test -count=1 -tags 'integration bench' -timeout 20m -run 'Bench' -v ./integration/ | grep -vE '^=== RUN'; \
	  status=$${PIPESTATUS[0]}; \
	  $(GO) test -run '^$$' -bench . -benchtime 200x ./hook ./secretfs ./secretfs/mount ./seal | tee -a bench.md; \
	  test $${PIPESTATUS[0]} -eq 0 && test $$status -eq 0

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags integration ./integration/
	$(GO) vet -tags 'integration bench' ./integration/
	$(GO) -C $(EXAMPLE) vet ./...
	@# scripts/setup.sh installs shellcheck; only outside CI may it be missing.
	@if command -v shellcheck >/dev/null; then shellcheck scripts/*.sh .ci/run packaging/deb/build.sh packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm && echo "shellcheck: ok"; \
	elif [ "$$CI" = true ]; then echo "shellcheck missing (scripts/setup.sh installs it)"; exit 1; \
	else echo "lint: shellcheck not installed, scripts not checked (apt-get install shellcheck)"; fi

# End-to-end demo (root): MQTT broker and client containers under rootless
# containerd with the northstar shim and a swtpm TPM; see scripts/demo.sh.
# It installs the Debian packages if they are missing and builds only what
# it runs (the three binaries and the example), none of make test's tools.
demo:
	bash scripts/demo.sh

clean:
	rm -rf $(BIN) $(DEB_OUT) integration.out
