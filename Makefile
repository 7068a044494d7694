# anyedge build, test and lab entry points. `make test` is what CI runs
# (.ci/run); `make lab` starts a local cluster to play with.

# Go lives in /usr/local/go on our machines; appended so that a go already
# on PATH wins.
export PATH := $(PATH):/usr/local/go/bin

VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/anyedge/anyedge/internal/version.Version=$(VERSION)

.PHONY: all build deps test test-ops e2e bench bench-sip lab lab-down fuzz clean

all: build

build:
	go build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

deps:
	scripts/install-deps.sh

# make test installs redis-server (deps), so the Redis Cluster tests must run,
# not skip.
test: export ANYEDGE_REQUIRE_REDIS = 1
test: deps build test-ops
	go vet ./...
	go test -race -count=1 ./...
	# The race detector slows the cluster simulation tenfold, so under -race
	# it runs 100 schedules; the full 1,000 run here without it.
	go test -count=1 -run '^TestSimulation$$' ./cluster/core
	$(MAKE) e2e

# The deployment assets: Prometheus rules (promtool), Terraform (fmt,
# validate, terraform test; Terraform or OpenTofu via scripts/tf.sh), the
# Ansible role and playbooks (lint, a real local run, against a local edged),
# and internal/deploytest (metric names, dashboard, runbooks, promtool check
# metrics). See docs/OPERATIONS.md.
test-ops: deps build
	deploy/test-ops.sh

# End-to-end tests with real parts (namespaces, BIRD, SIPp); they need root.
e2e:
	@if [ -d e2e ]; then \
		echo go test -count=1 -tags e2e -timeout 30m ./e2e/...; \
		go test -count=1 -tags e2e -timeout 30m ./e2e/...; \
	else \
		echo "no e2e/ directory: skipping end-to-end tests"; \
	fi

bench: bench-sip
	go test -run '^$$' -bench . -benchmem ./...

# SIP figures on loopback: edged against Kamailio with SIPp (needs sipp and
# kamailio: make deps). About 30 minutes; docs/BENCHMARKS.md says how to
# read the results. SIPBENCH_FLAGS passes flags, e.g. SIPBENCH_FLAGS='-runs 1'.
bench-sip: build
	go run ./bench/sipbench -edged bin/edged $(SIPBENCH_FLAGS)

# Redis Cluster location figures (docs/BENCHMARKS.md, "Redis Cluster
# location"): REGISTER/s from one and two nodes against in-memory, lookup
# p50/p99, round trips per REGISTER, Redis memory per binding. Starts its
# own six-node cluster on loopback (redis-server: make deps). About 2 min.
.PHONY: bench-redis
bench-redis:
	ANYEDGE_REQUIRE_REDIS=1 go test -run '^$$' -bench 'BenchmarkRegister|BenchmarkLookup|BenchmarkMemoryPerBinding' -benchtime 2s -count 3 ./geo/redisloc

# REGISTER/s under SIPp in the db-driven model (docs/BENCHMARKS.md, "Redis
# Cluster location"): one edged in memory mode, one db-driven, two
# db-driven edged processes sharing one six-node Redis Cluster, each with
# its own SIPp, in one invocation (needs sipp and redis-server: make deps).
# About 15 minutes with three runs. REDIS_SIP_FLAGS passes flags, e.g.
# REDIS_SIP_FLAGS='-runs 1 -step 5s'.
# Issue 4's replication figures under SIPp (docs/BENCHMARKS.md, "Geo"):
# REGISTER/s of a home replicating to its partner against the same node
# alone and without geo, and the replication lag at half that rate. The
# home is pinned to CPU 0, its partner and SIPp to CPU 1. About 15 minutes.
.PHONY: bench-geo-sip
bench-geo-sip: build
	ANYEDGE_BENCH_GEO_SIP=1 go test -count=1 -run '^TestGeoSIPBench$$' -v -timeout 90m ./bench/sipbench -args -edged $(CURDIR)/bin/edged $(GEO_SIP_FLAGS)

.PHONY: bench-redis-sip
bench-redis-sip: build
	ANYEDGE_REQUIRE_REDIS=1 ANYEDGE_BENCH_REDIS_SIP=1 go test -count=1 -run '^TestRedisSIPBench$$' -v -timeout 90m ./bench/sipbench -args -edged $(CURDIR)/bin/edged $(REDIS_SIP_FLAGS)

lab:
	scripts/lab.sh up

lab-down:
	scripts/lab.sh down

# A short fuzz run of the wire decoder; go test -fuzz takes one package.
fuzz:
	go test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 30s ./cluster/wire

clean:
	rm -rf bin/
