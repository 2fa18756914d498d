# Gregor — build, run, test, bench, fuzz, lint.
# A fresh machine has only Go, gcc, git, python3 and Node: every target installs or
# builds what it needs (Go modules through the module proxy, Debian packages via apt).

GO        ?= go
BIN       := bin
GOFLAGS   += -buildvcs=false
export GOFLAGS

STATICCHECK_VERSION := v0.8.2
BENCHSTAT_VERSION   := v0.0.0-20260908200009-22c9c6c9d4da
# FUZZTIME is how long each fuzz target runs under `make fuzz`.
FUZZTIME  ?= 15s
# TEST_TIMEOUT bounds the whole `go test` run (CI gives the job 90 minutes).
TEST_TIMEOUT ?= 20m

# Programs: folder under cmd/ → binary name. A folder without a main function yet
# (only a doc.go saying what will live there) is skipped with a note.
PROGRAMS := cp:gregor-cp dp:gregor-dp gregor:gregor

.PHONY: all build run cluster test test-short test-deps chaos chaos-scenarios bench bench-full bench-replication bench-txn bench-micro bench-compare fuzz lint deps clean

all: build

deps:
	$(GO) mod download

build: deps
	@mkdir -p $(BIN)
	@for p in $(PROGRAMS); do \
	  dir=$${p%%:*}; name=$${p##*:}; \
	  if grep -qs '^func main()' cmd/$$dir/*.go; then \
	    echo "go build -o $(BIN)/$$name ./cmd/$$dir"; \
	    $(GO) build -o $(BIN)/$$name ./cmd/$$dir || exit 1; \
	  elif [ -d cmd/$$dir ]; then \
	    echo "build: cmd/$$dir has no program yet (see cmd/$$dir/doc.go), skipped"; \
	  fi; \
	done

# run: a single-node cluster (one gregor-cp, one gregor-dp), data under ./data,
# Kafka on 127.0.0.1:9092. Ctrl-C stops both.
run: build
	@scripts/run.sh

# cluster: three gregor-cp and three gregor-dp on this machine, data under ./data/cluster,
# Kafka on 127.0.0.1:9092, 9192 and 9292 (scripts/cluster.sh lists every port). Ctrl-C
# stops all six; a second `make cluster` starts again on the same data.
cluster: build
	@scripts/cluster.sh

# test: every test, with the race detector (the storage engine's concurrent-reader
# test is only meaningful under it). GREGOR_TEST_DEPS says test-deps ran: a test whose
# client or peer is missing then fails instead of skipping (testutil.NeedDep).
test: deps test-deps
	GREGOR_TEST_DEPS=1 $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

# test-deps: the Kafka clients the compatibility tests drive (Debian packages, and
# KafkaJS from npm under .cache/) and the peers the bench drivers' tests start, so that
# no test skips for want of them; and the librdkafka the fault suite's confluent-kafka
# producer loads, built once under .cache/ (Debian's 2.0.2 has an idempotent-producer
# bug, fixed upstream in 2.3.0).
test-deps:
	@if ! command -v kcat >/dev/null || ! /usr/bin/python3 -c 'import kafka' 2>/dev/null || \
	    ! /usr/bin/python3 -c 'import confluent_kafka' 2>/dev/null; then \
	  echo "installing kcat, python3-kafka and python3-confluent-kafka (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat python3-kafka python3-confluent-kafka >/dev/null; \
	fi
	@scripts/install-peers.sh
	@scripts/build-librdkafka.sh
	@scripts/install-kafkajs.sh

# test-short: the same without the race detector, for a quick loop while editing.
test-short:
	$(GO) test -count=1 -short ./...

# chaos: the fault suite's random mix (chaos/chaos_test.go's TestChaos) for CHAOS_TIME on
# three gregor-cp and three gregor-dp processes: kills, pauses, network cuts and delays
# under franz-go and librdkafka producers and consumers, the history judged at the end.
# CHAOS_SEED replays a run's faults; a failed run is kept under chaos-runs/.
#   make chaos CHAOS_TIME=30m CHAOS_SEED=42
# The test's timeout is CHAOS_TIME plus 15 minutes for the start and the final checks.
CHAOS_TIME ?= 10m
CHAOS_TIMEOUT = $(shell python3 -c 'import re, sys; u = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}; \
  print("%ds" % (900 + sum(float(n) * u[k] for n, k in re.findall(r"([0-9.]+)(ms|h|m|s)", sys.argv[1]))))' '$(CHAOS_TIME)')
chaos: build test-deps
	CHAOS_TIME=$(CHAOS_TIME) $(GO) test -count=1 -run '^TestChaos$$' -v -timeout $(CHAOS_TIMEOUT) ./chaos/

# chaos-scenarios: every scenario of the fault suite (R1 for 60 s), each run's summary
# appended to CHAOS_REPORT (chaos-runs/scenarios.jsonl), then their table as
# docs/reliability.md shows it.
CHAOS_REPORT ?= chaos-runs/scenarios.jsonl
chaos-scenarios: build test-deps
	@mkdir -p $(dir $(CHAOS_REPORT))
	CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) CHAOS_R1_TIME=60s $(GO) test -count=1 -run '^TestR[0-9]' -v -timeout 30m ./chaos/
	@CHAOS_REPORT=$(abspath $(CHAOS_REPORT)) $(GO) test -count=1 -run '^TestReportTable$$' -v ./chaos/ | grep '^|'

# bench: the quick side-by-side suite (≤ 5 min): Gregor, NATS JetStream and Redis Streams
# on the same workloads. Installs the peers if missing, starts Gregor from bin/ when
# nothing answers on 127.0.0.1:9092, and rewrites BENCHMARKS.md's suite section and
# perf/results/.
bench: build
	scripts/install-peers.sh
	$(BIN)/gregor bench suite --quick

# bench-full: the workloads as written (about 80 minutes).
bench-full: build
	scripts/install-peers.sh
	$(BIN)/gregor bench suite --full

# bench-replication: the replication benchmarks (≤ 5 min) on 1 gregor-cp and 3 gregor-dp
# processes from bin/ — produce at acks=all on RF 3 beside acks=1 on RF 1, a follower
# catching up 1 GiB, leader failover and restart to ISR — into perf/results/replication-*
# and BENCHMARKS.md's replication section. REPLICATION_FLAGS adds flags (--full,
# --registration-ttl 2s, …; bin/gregor bench suite --replication -h lists them).
REPLICATION_FLAGS ?= --quick
bench-replication: build
	$(BIN)/gregor bench suite --replication $(REPLICATION_FLAGS)

# bench-txn: transactional produce with 1, 10 and 100 batches per transaction against
# idempotent produce of the same batches (about 2 minutes: 4 modes of 2 s warmup and 20 s
# measured), on Gregor started from bin/ when nothing answers on 127.0.0.1:9092, into
# perf/results/txn.{json,md} and BENCHMARKS.md's transactions section. TXN_FLAGS adds
# flags (--duration 60s, --producers 8, …; bin/gregor bench txn -h lists them).
TXN_FLAGS ?=
bench-txn: build
	$(BIN)/gregor bench txn $(TXN_FLAGS)

# bench-compare: whole-system A/B of BASE's servers against the working tree's on the
# quick workloads — the check every change to the produce or fetch path goes through,
# since a micro-benchmark with one request in flight does not see what pipelining
# clients do to a server. BASE's gregor-cp and gregor-dp are built in a git worktree
# under $(BENCH_COMPARE) (removed once built, unless it was there before; the binaries
# are kept there, per commit, for the next comparison with the same base). The runs
# alternate (A B, then B A), ROUNDS each, every one on freshly started servers, and the working
# tree's bin/gregor drives both. DRIVERS: kafka-raw (default; the broker's limit) and/or
# kafka; WORKLOADS: names to run, comma-separated (default: all). Prints a Markdown table
# for BENCHMARKS.md and saves every run in perf/results/compare-*.json; exits 3 when a
# figure lost 10% or more (marked **LOSS**), 1 when a run failed.
#   make bench-compare BASE=edce2d0~1
#   make bench-compare BASE=main ROUNDS=5 DRIVERS=kafka-raw,kafka WORKLOADS=max-rate-16p-1kb
BENCH_COMPARE := .bench-compare
ROUNDS        ?= 3
DRIVERS       ?= kafka-raw
WORKLOADS     ?=
BASE_COMMIT    = $(shell git rev-parse --short=12 --verify --quiet '$(BASE)^{commit}' 2>/dev/null)
BASE_BIN       = $(BENCH_COMPARE)/bin-$(BASE_COMMIT)

# BASE is checked before anything is built.
ifneq ($(filter bench-compare,$(MAKECMDGOALS)),)
ifeq ($(BASE),)
$(error bench-compare: say what to compare against: make bench-compare BASE=<rev>)
endif
ifeq ($(BASE_COMMIT),)
$(error bench-compare: BASE=$(BASE) is not a commit)
endif
endif

# The worktree is added with --force: one left registered by a run killed outright (its
# directory gone, its entry not) is then re-added instead of refused.
bench-compare: build
	@if [ -x $(BASE_BIN)/gregor-cp ] && [ -x $(BASE_BIN)/gregor-dp ]; then \
	  echo "bench-compare: $(BASE) ($(BASE_COMMIT)) already built in $(BASE_BIN)/"; \
	else \
	  src=$(BENCH_COMPARE)/src-$(BASE_COMMIT); created=; \
	  trap 'if [ -n "$$created" ]; then git worktree remove --force '"$$src"'; fi' EXIT; \
	  trap 'exit 130' INT TERM; \
	  if [ ! -d $$src ]; then \
	    git worktree add --force --detach $$src $(BASE_COMMIT) || exit 1; created=1; \
	  fi; \
	  echo "bench-compare: building $(BASE) ($(BASE_COMMIT)) in $$src"; \
	  mkdir -p $(BASE_BIN) && \
	  (cd $$src && $(GO) build -o $(CURDIR)/$(BASE_BIN)/gregor-cp ./cmd/cp && \
	    $(GO) build -o $(CURDIR)/$(BASE_BIN)/gregor-dp ./cmd/dp) || \
	  { rm -f $(BASE_BIN)/gregor-cp $(BASE_BIN)/gregor-dp; exit 1; }; \
	fi
	$(BIN)/gregor bench compare --base-bin $(BASE_BIN) --base-label '$(BASE)' --base-commit $(BASE_COMMIT) \
	  --new-bin $(BIN) --new-label 'working tree' --rounds $(ROUNDS) --drivers $(DRIVERS) \
	  $(if $(WORKLOADS),--only $(WORKLOADS)) \
	  --command 'make bench-compare BASE=$(BASE) ROUNDS=$(ROUNDS) DRIVERS=$(DRIVERS)$(if $(WORKLOADS), WORKLOADS=$(WORKLOADS))'

# bench-micro: the Go micro-benchmarks of the hot paths (storage, codec, zero-copy
# writer, data-plane round trips) and of consumer groups (rebalance, OffsetCommit, on an
# in-process cluster); compare runs with benchstat.
bench-micro: deps
	$(GO) test -run '^$$' -bench . -benchmem -count=6 ./segment/ ./proto/ ./sendfile/ ./dataplane/
	$(GO) test -run '^$$' -bench 'GroupRebalance|GroupJoinKgo|OffsetCommit' -benchmem -count=6 ./perf/

# fuzz: a short run of every fuzz target (go test runs one fuzz target at a time).
fuzz: deps
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

clean:
	rm -rf $(BIN) $(BENCH_COMPARE)
	git worktree prune
