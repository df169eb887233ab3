#!/bin/sh
# pgBackRest full backup of a PostgreSQL database (pgbench scale SCALE, default 70: ~1 GB),
# zst level 1, process-max 2, warm cache; prints {"pg_bytes", "seconds", "repo_bytes"}. Needs root
# (runs PostgreSQL as the postgres user) and the Debian packages postgresql and pgbackrest.
set -eu
T=$(mktemp -d /tmp/ombra-pgb-XXXXXX); chmod 755 $T; chown postgres $T
B=/usr/lib/postgresql/15/bin
run() { runuser -u postgres -- "$@"; }
run $B/initdb -D $T/pg >/dev/null 2>&1
cat >> $T/pg/postgresql.conf <<EOC
listen_addresses = ''
unix_socket_directories = '$T'
port = 5499
archive_mode = on
archive_command = 'pgbackrest --config=$T/pgbackrest.conf --stanza=bench archive-push %p'
wal_level = replica
max_wal_size = 4GB
EOC
cat > $T/pgbackrest.conf <<EOC
[global]
repo1-path=$T/repo
log-path=$T
lock-path=$T
compress-type=zst
compress-level=1
process-max=2
start-fast=y
[bench]
pg1-path=$T/pg
pg1-socket-path=$T
pg1-port=5499
EOC
chown postgres $T/pgbackrest.conf
run $B/pg_ctl -D $T/pg -l $T/pg.log -w start >/dev/null
run pgbench -h $T -p 5499 -i -q -s ${SCALE:-70} postgres >/dev/null 2>&1
run psql -h $T -p 5499 -qAt -c "checkpoint" postgres
SIZE=$(du -sb --exclude=pg_wal $T/pg | cut -f1)  # the WAL is archived, not backed up
run pgbackrest --config=$T/pgbackrest.conf --stanza=bench stanza-create >/dev/null 2>&1
cat $T/pg/base/*/* > /dev/null 2>&1 || true
S=$(date +%s.%N)
run pgbackrest --config=$T/pgbackrest.conf --stanza=bench --type=full backup >/dev/null 2>&1
E=$(date +%s.%N)
REPO=$(du -sb $T/repo | cut -f1)
echo "{\"pg_bytes\": $SIZE, \"seconds\": $(echo "$E - $S" | bc), \"repo_bytes\": $REPO}"
run $B/pg_ctl -D $T/pg -w stop -m fast >/dev/null
rm -rf $T
