# How the test build fits the disk it has. Sourced by scripts/test after
# services.sh (for `log`).
#
# A clean clone's clippy and test build, measured: 12.6 GiB with full debug
# info, 4.3 GiB with line tables only (Cargo.toml), of which 1.8 GiB is
# rustc's incremental cache. That cache only pays back on a rebuild after a
# small edit, which a CI run never does, so it is left out under CI and
# wherever the disk is short. An explicit CARGO_INCREMENTAL always wins.
#
# Line tables cost more than that: without incremental, clippy and the test
# build took 4.7 GiB with them and 2.9 GiB without any debug info (measured
# 2026-12-06 on a clean clone). Where the disk is short they are dropped
# too, so a backtrace names functions but not lines; an explicit
# CARGO_PROFILE_DEV_DEBUG always wins.

# Free MiB on the filesystem that holds cargo's target directory.
target_free_mib() {
    local dir="${CARGO_TARGET_DIR:-target}"
    [ -d "$dir" ] || dir=.
    df -Pm "$dir" | awk 'NR == 2 { print $4 }'
}

BUILD_NEEDS_MIB=3500
BUILD_INCREMENTAL_BELOW_MIB=8000
BUILD_LINE_TABLES_BELOW_MIB=10000

plan_build_disk() {
    local free
    free="$(target_free_mib)"
    if ! [[ "$free" =~ ^[0-9]+$ ]]; then
        log "disk: could not read the free space under the target directory; building as usual"
        return 0
    fi
    if [ -z "${CARGO_INCREMENTAL+set}" ] && { [ -n "${CI:-}" ] || [ "$free" -lt "$BUILD_INCREMENTAL_BELOW_MIB" ]; }; then
        export CARGO_INCREMENTAL=0
        log "disk: ${free} MiB free; incremental compilation off (${CI:+CI, }saves ~1.8 GiB)"
    else
        log "disk: ${free} MiB free"
    fi
    if [ -z "${CARGO_PROFILE_DEV_DEBUG+set}" ] && [ "$free" -lt "$BUILD_LINE_TABLES_BELOW_MIB" ]; then
        export CARGO_PROFILE_DEV_DEBUG=0
        log "disk: under ${BUILD_LINE_TABLES_BELOW_MIB} MiB free; building without line tables (saves ~1.7 GiB; backtraces name functions, not lines)"
    fi
    # A linker that runs out of disk mid-write often dies of a bus error
    # (signal 7) rather than saying so; name the likely cause beside it.
    trap 'report_disk_after_failure' ERR
    if [ "$free" -lt "$BUILD_NEEDS_MIB" ]; then
        log "warning: a clean test build needs about ${BUILD_NEEDS_MIB} MiB; only ${free} MiB are free, so it may fail with 'No space left on device'"
    fi
}

report_disk_after_failure() {
    local free
    free="$(target_free_mib)"
    if [[ "$free" =~ ^[0-9]+$ ]] && [ "$free" -lt "$BUILD_NEEDS_MIB" ]; then
        log "disk: only ${free} MiB free under the target directory now; a failed link (bus error, 'No space left on device') is most likely the full disk"
    else
        log "disk: ${free} MiB free under the target directory"
    fi
}
