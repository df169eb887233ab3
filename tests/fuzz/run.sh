#!/bin/sh
# Builds the fuzz targets with libFuzzer, ASan and UBSan and runs each for a bounded time on a
# scratch copy of its seeds: fuzz_formats.c (the format parsers, tests/fuzz/seeds/) and
# fuzz_proto.c (the control-socket frames, tests/fuzz/seeds-proto/).
#
#   tests/fuzz/run.sh              fuzz formats for FUZZ_SECONDS (default 30) seconds, then
#                                  proto for FUZZ_PROTO_SECONDS (default 5)
#   tests/fuzz/run.sh FILE...      run the target once on each FILE (reproduce a crash)
#   tests/fuzz/run.sh seeds        regenerate tests/fuzz/seeds/ with make_seeds.c
#   FUZZ_TARGET=proto (or formats) runs that target alone, for FUZZ_SECONDS, or on FILE...
#
# Exits non-zero on a crash, a sanitizer report or a build failure; the crashing input is
# kept in the scratch folder named in the message. Without clang and its fuzzer runtime
# (packages clang, libclang-rt-14-dev) it says so and exits 1, or 0 when FUZZ_OPTIONAL=1.
# Environment: FUZZ_SECONDS, FUZZ_PROTO_SECONDS, FUZZ_TARGET, FUZZ_MAX_LEN (default 8192),
# FUZZ_OPTIONAL, CC (default clang).
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
libs="-lxxhash -luuid -ljansson -linih -lsystemd -lpthread"
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

# Warnings are errors in the targets themselves; the engine's sources are held to that by the
# regular build, and a newer clang's extra warning there should not stop the fuzzing.
build_target() {
    # shellcheck disable=SC2086
    "$cc" $cflags $san -Wall -Wextra -Werror -Wmissing-prototypes -c -o "$work/$1.o" \
        "$here/$1.c"
    # shellcheck disable=SC2086
    "$cc" $cflags $san -o "$work/$1" "$work/$1.o" $srcs $libs
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

target=${FUZZ_TARGET:-}
if [ $# -gt 0 ]; then
    build_target "fuzz_${target:-formats}"
    "$work/fuzz_${target:-formats}" "$@"
    exit $?
fi

# fuzz NAME SEEDS SECONDS
fuzz() {
    build_target "$1"
    mkdir -p "$work/$1-corpus" "$work/$1-artifacts"
    cp "$2"/* "$work/$1-corpus/"
    status=0
    "$work/$1" -max_total_time="$3" -rss_limit_mb=2048 \
        -max_len="${FUZZ_MAX_LEN:-8192}" -print_final_stats=1 \
        -artifact_prefix="$work/$1-artifacts/" "$work/$1-corpus" || status=$?
    if [ "$status" -ne 0 ]; then
        keep_work=1
        echo "fuzz: $1 FAILED (exit $status); crashing input in $work/$1-artifacts/," \
            "reproduce with: FUZZ_TARGET=${1#fuzz_} tests/fuzz/run.sh $work/$1-artifacts/<file>" >&2
        exit "$status"
    fi
    echo "fuzz: $1: no crash in $3 s"
}

case "$target" in
formats) fuzz fuzz_formats "$here/seeds" "$seconds" ;;
proto) fuzz fuzz_proto "$here/seeds-proto" "$seconds" ;;
*)
    fuzz fuzz_formats "$here/seeds" "$seconds"
    fuzz fuzz_proto "$here/seeds-proto" "${FUZZ_PROTO_SECONDS:-5}"
    ;;
esac
