#!/bin/sh
# pgBackRest restore of a PostgreSQL database (pgbench scale SCALE, default 70: ~1 GB): the same
# setup as pgbackrest_full.sh (zst level 1, process-max 2), a full backup (not timed), PostgreSQL
# stopped, then `pgbackrest restore` timed into an empty data directory, ROUNDS times (default 3),
# warm cache. The last restored cluster is then started and pgbench_accounts counted (not timed).
# Prints {"pg_bytes", "seconds" (the median), "runs", "restored_bytes", "repo_bytes", "verified"}. Needs root (runs PostgreSQL as the postgres user)
# and the Debian packages postgresql, pgbackrest and bc.
set -eu
PORT=5498
. "$(dirname "$0")/pgbackrest_setup.sh"
PGDATA=$T/pg
cleanup() {
    for d in $T/pg $T/pg2; do
        [ -f $d/postmaster.pid ] && run $B/pg_ctl -D $d -w stop -m immediate >/dev/null 2>&1 || true
    done
    rm -rf $T
}
trap cleanup EXIT
run pgbackrest --config=$T/pgbackrest.conf --stanza=bench --type=full backup >/dev/null 2>&1
run $B/pg_ctl -D $T/pg -w stop -m fast >/dev/null
REPO=$(du -sb $T/repo | cut -f1)
# ROUNDS (default 3) restores, each into an empty data directory, the repository read first
# (warm, like the others); the median time
TIMES=""
i=0
while [ $i -lt ${ROUNDS:-3} ]; do
    rm -rf $T/pg2
    install -d -m 700 -o postgres $T/pg2
    cat $(find $T/repo -type f) > /dev/null
    sync
    S=$(date +%s.%N)
    run pgbackrest --config=$T/pgbackrest.conf --stanza=bench --pg1-path=$T/pg2 restore >/dev/null 2>&1
    E=$(date +%s.%N)
    TIMES="$TIMES $(echo "$E - $S" | bc | sed 's/^\./0./')"
    i=$((i + 1))
done
SECS=$(echo $TIMES | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
RESTORED=$(du -sb --exclude=pg_wal $T/pg2 | cut -f1)
# the restored cluster starts (recovery from the archived WAL) and holds every pgbench account
VERIFIED=false
if run $B/pg_ctl -D $T/pg2 -l $T/pg2.log -w -t 300 start >/dev/null 2>&1; then
    N=$(run psql -h $T -p 5498 -qAt -c "select count(*) from pgbench_accounts" postgres 2>/dev/null || echo 0)
    [ "$N" = "$((SCALE * 100000))" ] && VERIFIED=true
    run $B/pg_ctl -D $T/pg2 -w stop -m fast >/dev/null
fi
echo "{\"pg_bytes\": $SIZE, \"seconds\": $SECS, \"runs\": [$(echo $TIMES | sed 's/ /, /g')], \"restored_bytes\": $RESTORED, \"repo_bytes\": $REPO, \"verified\": $VERIFIED}"
