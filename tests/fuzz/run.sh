#!/bin/sh
# Builds the format parsers' fuzz target (fuzz_formats.c) with libFuzzer, ASan and UBSan and
# runs it for a bounded time on a scratch copy of tests/fuzz/seeds/.
#
#   tests/fuzz/run.sh              fuzz for FUZZ_SECONDS (default 30) seconds
#   tests/fuzz/run.sh FILE...      run the target once on each FILE (reproduce a crash)
#   tests/fuzz/run.sh seeds        regenerate tests/fuzz/seeds/ with make_seeds.c
#
# Exits non-zero on a crash, a sanitizer report or a build failure; the crashing input is
# kept in the scratch folder named in the message. Without clang and its fuzzer runtime
# (packages clang, libclang-rt-14-dev) it says so and exits 1, or 0 when FUZZ_OPTIONAL=1.
# Environment: FUZZ_SECONDS, FUZZ_MAX_LEN (default 8192), FUZZ_OPTIONAL, CC (default clang).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cc=${CC:-clang}
seconds=${FUZZ_SECONDS:-30}
work=$(mktemp -d "${TMPDIR:-/tmp}/ombra-fuzz.XXXXXX")
keep_work=0
cleanup() { [ "$keep_work" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

srcs="$root/src/base/*.c $root/src/engine/*.c $root/tests/support/crashvfs.c"
cflags="-std=c17 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -I$root/src -I$root/tests/support"
libs="-lxxhash -luuid -ljansson -lpthread"
san="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all"

if [ "${1:-}" = seeds ]; then
    # shellcheck disable=SC2086 # word splitting of the flag and file lists is intended
    "$cc" $cflags -Wall -Wextra -Werror -o "$work/make_seeds" "$here/make_seeds.c" $srcs $libs
    rm -f "$here"/seeds/*
    mkdir -p "$here/seeds"
    "$work/make_seeds" "$here/seeds"
    echo "fuzz: seeds written to $here/seeds"
    exit 0
fi

# One probe says whether the compiler and its libFuzzer/sanitizer runtimes are there.
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\n%s\n' \
    'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' \
    >"$work/probe.c"
# shellcheck disable=SC2086
if ! "$cc" $san -o "$work/probe" "$work/probe.c" >/dev/null 2>&1; then
    echo "fuzz: not run: $cc with -fsanitize=fuzzer is not available (install clang and libclang-rt-14-dev)"
    [ "${FUZZ_OPTIONAL:-0}" = 1 ] && exit 0
    exit 1
fi

# Warnings are errors in the target itself; the engine's sources are held to that by the
# regular build, and a newer clang's extra warning there should not stop the fuzzing.
# shellcheck disable=SC2086
"$cc" $cflags $san -Wall -Wextra -Werror -Wmissing-prototypes -c -o "$work/fuzz_formats.o" \
    "$here/fuzz_formats.c"
# shellcheck disable=SC2086
"$cc" $cflags $san -o "$work/fuzz_formats" "$work/fuzz_formats.o" $srcs $libs

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

if [ $# -gt 0 ]; then
    "$work/fuzz_formats" "$@"
    exit $?
fi

mkdir -p "$work/corpus" "$work/artifacts"
cp "$here"/seeds/* "$work/corpus/"
status=0
"$work/fuzz_formats" -max_total_time="$seconds" -rss_limit_mb=2048 \
    -max_len="${FUZZ_MAX_LEN:-8192}" -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" || status=$?
if [ "$status" -ne 0 ]; then
    keep_work=1
    echo "fuzz: FAILED (exit $status); crashing input in $work/artifacts/," \
        "reproduce with: tests/fuzz/run.sh $work/artifacts/<file>" >&2
    exit "$status"
fi
echo "fuzz: no crash in ${seconds}s"
