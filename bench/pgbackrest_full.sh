#!/bin/sh
# pgBackRest full backup of a PostgreSQL database (pgbench scale SCALE, default 70: ~1 GB),
# zst level 1, process-max 2, warm cache; prints {"pg_bytes", "seconds", "repo_bytes"}. Needs root
# (runs PostgreSQL as the postgres user) and the Debian packages postgresql and pgbackrest.
set -eu
PORT=5499
. "$(dirname "$0")/pgbackrest_setup.sh"
cat $T/pg/base/*/* > /dev/null 2>&1 || true
S=$(date +%s.%N)
run pgbackrest --config=$T/pgbackrest.conf --stanza=bench --type=full backup >/dev/null 2>&1
E=$(date +%s.%N)
REPO=$(du -sb $T/repo | cut -f1)
echo "{\"pg_bytes\": $SIZE, \"seconds\": $(echo "$E - $S" | bc | sed 's/^\./0./'), \"repo_bytes\": $REPO}"
run $B/pg_ctl -D $T/pg -w stop -m fast >/dev/null
rm -rf $T
