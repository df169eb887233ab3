# The two commands of the README (`make demo`, `make test`) work on a fresh Debian machine:
# both install what is missing first. Everything else builds into build/.
BUILD   ?= build
ASAN    ?= build-asan
MESON   ?= meson
PYTEST  ?= pytest-3
CRASH_POINTS ?= 1000
# make test-long: the unit suites, plain and under the sanitizers, at their own sizes and this.
LONG_CRASH_POINTS ?= 2000
# Under the sanitizers the crash harnesses look for memory errors, not for more crash points
# (the plain build tries CRASH_POINTS; make test-long the whole ASan run): 40 points, every
# 4th sync point of the loops that try each one (OMBRA_CRASH_EVERY), the table's largest value
# 8 MiB instead of 64, its crash test at 12 points (its model test keeps 20,000 operations: with
# 12,000 the tree it checks for 3 levels stayed at 2).
ASAN_CRASH_POINTS ?= 40
# The plain unit pass of make test: half the table's model and crash tests and its largest value
# 16 MiB (make test-long: the tests' own sizes, 100,000 operations, 300 points, 64 MiB).
UNIT_SHORT ?= OMBRA_TABLE_OPS=50000 OMBRA_TABLE_CRASH_POINTS=150 OMBRA_TABLE_BIG_MB=16
ASAN_UNIT_SHORT ?= OMBRA_CRASH_EVERY=4 OMBRA_TABLE_BIG_MB=8
# The system suites under the sanitizers in make test, a representative subset: all but the
# long randomized ones (the campaign, the soak, the attack loops), the man pages, the units and
# the benchmark table (groff, bash, systemd-analyze and Python over generated text: little or
# none of our C), the tests marked slow_under_sanitizers (kill -9 rounds, 100 databases,
# descriptor exhaustion, waits on deadlines, loops over time zones), and each parametrized test
# with its first parameters only (OMBRA_FIRST_PARAMS_ONLY); make test-long runs all of it under
# them too.
# Of that subset make test runs one third (a stable hash of each test's id), the third chosen by
# the commit (its hash's last digit modulo 3), so that consecutive commits cover all three:
# ASAN_SYSTEM_SHARD=K/3 picks one, ASAN_SYSTEM_SHARD= runs the whole subset.
ASAN_SYSTEM_SHARD ?= $(or $(shell git rev-parse HEAD 2>/dev/null | cut -c40 | tr 0-9a-f 0120120120120120),0)/3
ASAN_SYSTEM_SKIP ?= --ignore=tests/system/test_campaign.py --ignore=tests/system/test_soak.py \
	--ignore=tests/system/test_restore_attacks.py --ignore=tests/system/test_manpages.py --ignore=tests/system/test_units.py \
	--ignore=tests/system/test_bench_figures.py -m "not slow_under_sanitizers"
# In that pass LeakSanitizer checks the daemons, not each CLI call's exit (about 50 ms of CPU
# each, 2,000 calls); make test-long checks both.
# System tests run in parallel (pytest-xdist): each test has its own daemons and directories.
# They wait on daemons as much as they compute: 4 workers keep 2 cores busier than 3, in the
# sanitizer pass too (the bounded fuzzing beside it is short; 232 s with 4 against ~296 s with 3).
PYTEST_WORKERS ?= 4
ASAN_PYTEST_WORKERS ?= 4
# The unit tests under the sanitizers run beside the system tests (which wait on daemons, disks
# and leases about half the time) in this many processes: make test's wall time.
ASAN_UNIT_PROCESSES ?= 1
# The plain unit tests alone: their crash loops wait on syncs, so 3 processes keep 2 cores
# busier than 2 (40 s against 57 s, 2026-12-07).
UNIT_PROCESSES ?= 3
# make test-dag: each DAG test brings up its own servers and etcd.
DAG_PYTEST_WORKERS ?= 3
# The DAG tests (tests/system/dag: servers in network namespaces, a real etcd; root): a short set
# runs with the plain system tests (the rest is marked dag_long), all of them in make test-dag,
# and in make test-long, there also under the sanitizers.
DAG_SKIP ?= --ignore=tests/system/dag

.PHONY: all deps build build-asan deb test-package test test-long test-campaign test-repo-kill test-soak test-dag test-tsan fuzz crash-long demo demo-dag bench bench-quick bench-table plots bench-vss bench-backup bench-restore bench-replay bench-dag bench-passive clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD) --buildtype=debugoptimized >/dev/null

build: $(BUILD)/build.ninja
	@ninja -C $(BUILD)

$(ASAN)/build.ninja:
	$(MESON) setup $(ASAN) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false >/dev/null

build-asan: $(ASAN)/build.ninja
	@ninja -C $(ASAN)

# The Debian package (debian/), built by dpkg-buildpackage in a copy of the tree (the files git
# tracks or would track) so that nothing is written outside build/: the .deb lands in
# $(BUILD)/deb/. README.md, "Install", says what to do with it.
DEB_DIR = $(BUILD)/deb
deb: deps
	@rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	@git ls-files -z --cached --others --exclude-standard | \
	  tar --null -T - --ignore-failed-read -cf - | tar -xf - -C $(DEB_DIR)/src
	cd $(DEB_DIR)/src && DEB_BUILD_OPTIONS="parallel=$$(nproc) $${DEB_BUILD_OPTIONS:-}" \
	  dpkg-buildpackage -b -us -uc >../dpkg-buildpackage.log 2>&1 || \
	  { tail -40 ../dpkg-buildpackage.log; echo "make deb: failed, see $(abspath $(DEB_DIR))/dpkg-buildpackage.log"; exit 1; }
	@rm -rf $(DEB_DIR)/src
	@ls $(DEB_DIR)/*.deb

# The package installed into a temporary root (never this machine's /usr and /etc):
# tests/system/test_package.py, left out of make test (it builds the package first).
test-package: deb
	OMBRA_DEB="$$(ls $(abspath $(DEB_DIR))/ombra_*.deb | head -1)" OMBRA_BUILD=$(abspath $(BUILD)) \
	  $(PYTEST) -q tests/system/test_package.py -m package

# Each stage of make test says when it starts (seconds since make started).
T0 := $(shell date +%s)
stage = echo "== $(1) (at $$(( $$(date +%s) - $(T0) )) s)"

# Unit tests (cmocka), the same under AddressSanitizer + UBSan, then the system tests.
test: deps build build-asan
	@scripts/check-layers
	@scripts/check-format
	@$(call stage,unit tests)
	@OMBRA_CRASH_POINTS=$(CRASH_POINTS) $(UNIT_SHORT) meson test -C $(BUILD) --print-errorlogs --num-processes $(UNIT_PROCESSES) --suite unit
	@$(call stage,system tests; the unit tests under AddressSanitizer + UndefinedBehaviorSanitizer beside them)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  OMBRA_CRASH_POINTS=$(ASAN_CRASH_POINTS) OMBRA_TABLE_CRASH_POINTS=12 OMBRA_TABLE_OPS=20000 OMBRA_TABLE_DELETE_ROUNDS=15 \
	  OMBRA_PASSIVE_CRASH_POINTS=4 OMBRA_CBT_CRASH_POINTS=$(ASAN_CRASH_POINTS) $(ASAN_UNIT_SHORT) \
	  meson test -C $(ASAN) --print-errorlogs --num-processes $(ASAN_UNIT_PROCESSES) --suite unit \
	  >$(BUILD)/asan-unit.log 2>&1 & au=$$!; trap 'kill $$au 2>/dev/null' EXIT INT TERM; \
	  OMBRA_BUILD=$(abspath $(BUILD)) OMBRA_CAMPAIGN_SECONDS=15 OMBRA_SOAK_SECONDS=12 OMBRA_FREEZE_GENS=500 \
	  $(PYTEST) -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=8 tests/system -m "not dag_long"; \
	  rc=$$?; wait $$au; arc=$$?; \
	  $(call stage,unit tests under AddressSanitizer + UndefinedBehaviorSanitizer (they ran beside the system tests)); \
	  if [ $$arc = 0 ]; then grep -E '^(Ok|Fail|Timeout|Expected Fail|Unexpected Pass|Skipped):' $(BUILD)/asan-unit.log; \
	  else cat $(BUILD)/asan-unit.log; echo "unit tests under the sanitizers failed ($$arc): $(abspath $(BUILD))/asan-unit.log"; fi; \
	  [ $$rc = 0 ] && [ $$arc = 0 ]
	@$(call stage,system tests under AddressSanitizer + UndefinedBehaviorSanitizer (part $(or $(ASAN_SYSTEM_SHARD),all) of the subset); bounded fuzzing beside them)
	@{ echo "== fuzzing the file-format parsers (bounded)" && FUZZ_SECONDS=6 tests/fuzz/run.sh; } \
	  >$(BUILD)/fuzz.log 2>&1 & tsan=$$!; trap 'kill $$tsan 2>/dev/null' EXIT INT TERM; \
	  ASAN_OPTIONS=detect_leaks=0 OMBRA_DAEMON_ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 \
	  OMBRA_BUILD=$(abspath $(ASAN)) OMBRA_FIRST_PARAMS_ONLY=1 OMBRA_TEST_SHARD=$(ASAN_SYSTEM_SHARD) \
	  $(PYTEST) -q -n $(ASAN_PYTEST_WORKERS) --dist loadgroup --durations=8 tests/system $(ASAN_SYSTEM_SKIP) $(DAG_SKIP); \
	  rc=$$?; wait $$tsan; trc=$$?; \
	  $(call stage,bounded fuzzing (it ran beside the pass above)); \
	  grep -v '^\[[0-9]*/[0-9]*\]' $(BUILD)/fuzz.log; \
	  [ $$trc = 0 ] || echo "fuzzing failed ($$trc): $(abspath $(BUILD))/fuzz.log"; \
	  [ $$rc = 0 ] && [ $$trc = 0 ]
	@$(call stage,all passed)

# The long versions of what make test runs short: the restore and damage campaign, the
# hostile-load soak, the crash harness over 50,000 points, the planner's random histories. The
# sanitizer unit pass at the long crash points takes minutes a test (test_mail's 1,000 power
# losses: about 7 idle), hence three times meson's timeouts.
test-long: deps build build-asan
	@$(MAKE) --no-print-directory test-tsan
	@$(MAKE) --no-print-directory test-campaign
	@$(MAKE) --no-print-directory test-repo-kill
	@$(MAKE) --no-print-directory test-soak
	@$(MAKE) --no-print-directory crash-long
	OMBRA_CHAIN_ROUNDS=100000 $(BUILD)/tests/unit/test_chain
	OMBRA_CRASH_POINTS=$(LONG_CRASH_POINTS) OMBRA_PASSIVE_BIG_TXN=1 meson test -C $(BUILD) --print-errorlogs --num-processes 2 --suite unit
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  OMBRA_CRASH_POINTS=$(LONG_CRASH_POINTS) meson test -C $(ASAN) --print-errorlogs --num-processes 2 --suite unit \
	  --timeout-multiplier 3
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 OMBRA_BUILD=$(abspath $(ASAN)) \
	  OMBRA_CAMPAIGN_SECONDS=120 OMBRA_SOAK_SECONDS=60 $(PYTEST) -q -n $(ASAN_PYTEST_WORKERS) --dist loadgroup \
	  tests/system

# The randomized restore campaign (tests/system/test_campaign.py) for CAMPAIGN_SECONDS.
CAMPAIGN_SECONDS ?= 900
test-campaign: deps build
	OMBRA_CAMPAIGN_SECONDS=$(CAMPAIGN_SECONDS) OMBRA_CAMPAIGN_REPORT=$(abspath $(BUILD))/campaign.json \
	  OMBRA_BUILD=$(abspath $(BUILD)) $(PYTEST) -q -s tests/system/test_campaign.py

# Repository writers killed beside each other (tests/system/test_repo_kill.py) for REPO_KILL_SECONDS.
REPO_KILL_SECONDS ?= 300
test-repo-kill: deps build
	OMBRA_REPO_KILL_SECONDS=$(REPO_KILL_SECONDS) OMBRA_BUILD=$(abspath $(BUILD)) \
	  $(PYTEST) -q -s tests/system/test_repo_kill.py

# The hostile-load soak (tests/system/test_soak.py) for SOAK_SECONDS.
SOAK_SECONDS ?= 180
test-soak: deps build
	OMBRA_SOAK_SECONDS=$(SOAK_SECONDS) OMBRA_SOAK_REPORT=$(abspath $(BUILD))/soak.json \
	  OMBRA_BUILD=$(abspath $(BUILD)) $(PYTEST) -q -s tests/system/test_soak.py

# The DAG test bed and the DAG tests (tests/system/dag): servers in network namespaces and a
# real etcd; root only (they skip without it).
test-dag: deps build
	OMBRA_BUILD=$(abspath $(BUILD)) $(PYTEST) -q -n $(DAG_PYTEST_WORKERS) tests/system/dag

# The nemesis (tests/system/dag/test_nemesis.py) for NEMESIS_SECONDS of faults: four servers,
# three etcd members, mail delivered to four databases (two with --sync-copies 1) while stores
# and replication services are killed and paused, links cut, etcd members killed and switchovers
# asked; then every copy equal, nothing acknowledged lost that no failover reported, never two
# actives. Writes bench/results/failover.md and .json (root). NEMESIS_SEED repeats a run.
NEMESIS_SECONDS ?= 600
NEMESIS_SEED ?=
.PHONY: nemesis
nemesis: deps build
	OMBRA_NEMESIS_SECONDS=$(NEMESIS_SECONDS) OMBRA_NEMESIS_SEED=$(NEMESIS_SEED) \
	  OMBRA_NEMESIS_REPORT=$(abspath bench/results/failover.md) OMBRA_BUILD=$(abspath $(BUILD)) \
	  $(PYTEST) -q -s tests/system/dag/test_nemesis.py -m nemesis

# A longer fuzzing run (FUZZ_SECONDS to change it).
fuzz: deps
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-600} tests/fuzz/run.sh

# The crash harness over many more crash points than make test runs.
crash-long: deps build
	OMBRA_CRASH_POINTS=50000 $(BUILD)/tests/unit/test_crash
	OMBRA_CBT_CRASH_POINTS=5000 $(BUILD)/tests/unit/test_changemap

demo: deps build
	@scripts/demo

# Three servers in a DAG on 127.0.0.1 (etcd, and each server's store, vssd and repld), one
# database with two passive copies while mail arrives; every copy's digest equal at the end.
demo-dag: deps build
	@scripts/demo-dag

# make bench: the SQLite comparisons (bench/run), then the figures of issue 21 in one table
# (bench/figures.py): BENCH_ROUNDS rounds of restore.py, backup.py, store_backup.py,
# vss_freeze.py (and replay.py once it exists) at the issue's sizes, each figure's median and
# spread beside its goal and its recorded median and spread; it exits 1 when a figure REGRESSED
# (after make plots). Not part of make test. BENCH_ARGS=--record makes the run the baseline
# (bench/results/figures.json). make bench-quick: small sizes, BENCH_QUICK_ROUNDS rounds, to
# try it (bench/results is left as it was). make bench-table: the table from bench/results (the
# last run of each benchmark: one round), nothing run.
BENCH_ROUNDS ?= 3
BENCH_QUICK_ROUNDS ?= 2
BENCH_BUILD ?= $(BUILD)
BENCH_ARGS ?=
bench: deps build
	@scripts/install-deps --bench
	@bench/run
	@python3 bench/figures.py --rounds $(BENCH_ROUNDS) --build $(BENCH_BUILD) --keep-results $(BENCH_ARGS); \
	  rc=$$?; $(MAKE) --no-print-directory plots || { [ $$rc != 0 ] || rc=2; }; exit $$rc

bench-quick: deps build
	@scripts/install-deps --bench
	python3 bench/figures.py --quick --rounds $(BENCH_QUICK_ROUNDS) --build $(BENCH_BUILD) $(BENCH_ARGS)

bench-table:
	python3 bench/figures.py --from-results bench/results $(BENCH_ARGS)

# The results as pictures: docs/plots/*.svg from bench/results/*.json (gnuplot; bench/plots.py).
plots:
	python3 bench/plots.py

# How long each shadow copy provider holds writes with 1 GiB of files (root: XFS and btrfs
# loop images for reflink and btrfs).
bench-vss: deps build
	python3 bench/vss_freeze.py --build $(BUILD)

# The store's writer under held backups (writes held, delivery latency), and full backups beside
# tar | zstd and restic.
bench-backup: deps build
	@scripts/install-deps --bench
	python3 bench/store_backup.py --build $(BUILD) --cases sizes,gens,dbs
	python3 bench/backup.py --build $(BUILD)

# Restore of a 1 GB store database from a full backup and three incrementals (laying down and log
# replay) beside zstd -d | tar -x of the same files and pgBackRest's restore (root).
bench-restore: deps build
	@scripts/install-deps --bench
	python3 bench/restore.py --build $(BUILD)

# Log replay: Ombra's hard recovery of about 256 MB of log beside PostgreSQL 15's crash recovery of
# as much WAL (root for PostgreSQL), alternating rounds.
bench-replay: deps build
	@scripts/install-deps --bench
	python3 bench/replay.py --build $(BUILD)

# Continuous replication under a steady delivery load with 0, 1 and 2 passive copies (a DAG of
# three servers on 127.0.0.1), beside PostgreSQL 15 streaming replication (root).
bench-dag: deps build
	@scripts/install-deps --bench
	python3 bench/replication.py --build $(BUILD)

bench-passive: deps build
	@scripts/install-deps --bench
	python3 bench/passive_backup.py --build $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN)

# The tests with threads under ThreadSanitizer: table readers during a writer never see
# uncommitted or half-split data; group commit; concurrent deliveries; then the shadow-copy,
# backup and restore system tests with every daemon and the CLI built with it (a report from
# any of them fails the target).
TSAN ?= build-tsan
$(TSAN)/build.ninja:
	$(MESON) setup $(TSAN) --buildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false >/dev/null

test-tsan: deps $(TSAN)/build.ninja
	@ninja -C $(TSAN) tests/unit/test_table_concurrency tests/unit/test_engine tests/unit/test_mail tests/unit/test_pool tests/unit/test_restore
	@TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 $(TSAN)/tests/unit/test_table_concurrency
	@TSAN_OPTIONS=halt_on_error=1 $(TSAN)/tests/unit/test_engine | tail -1
	@TSAN_OPTIONS=halt_on_error=1 OMBRA_MAIL_CRASH_POINTS=20 $(TSAN)/tests/unit/test_mail | tail -1
	@TSAN_OPTIONS=halt_on_error=1 $(TSAN)/tests/unit/test_pool | tail -1
	@TSAN_OPTIONS=halt_on_error=1 $(TSAN)/tests/unit/test_restore | tail -1
	@ninja -C $(TSAN) >/dev/null
	@rm -rf $(TSAN)/system-reports && mkdir -p $(TSAN)/system-reports
	@TSAN_OPTIONS=log_path=$(abspath $(TSAN))/system-reports/race OMBRA_BUILD=$(abspath $(TSAN)) \
	  $(PYTEST) -q -n $(PYTEST_WORKERS) tests/system/test_vss.py tests/system/test_session_rules.py \
	  tests/system/test_backup.py tests/system/test_backup_freeze.py tests/system/test_restore.py
	@if [ -n "$$(ls $(TSAN)/system-reports)" ]; then cat $(TSAN)/system-reports/*; \
	  echo "ThreadSanitizer reported races in the daemons or the CLI: $(abspath $(TSAN))/system-reports"; exit 1; fi
