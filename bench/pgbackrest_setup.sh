# Sourced by pgbackrest_full.sh and pgbackrest_restore.sh: a PostgreSQL 15 cluster in a new
# temporary directory $T (data in $T/pg) on port $PORT, archiving its WAL to a pgBackRest
# repository ($T/repo; zst level 1, process-max 2; stanza "bench", created), loaded with pgbench
# scale ${SCALE:-70} (~1 GB) and checkpointed. Sets T, B (PostgreSQL's binaries), SIZE (the
# cluster's bytes without pg_wal: the WAL is archived, not backed up) and run() (as postgres).
# Needs root and the Debian packages postgresql and pgbackrest.
T=$(mktemp -d /tmp/ombra-pgb-XXXXXX); chmod 755 $T; chown postgres $T
B=/usr/lib/postgresql/15/bin
SCALE=${SCALE:-70}
run() { runuser -u postgres -- "$@"; }
run $B/initdb -D $T/pg >/dev/null 2>&1
cat >> $T/pg/postgresql.conf <<EOC
listen_addresses = ''
unix_socket_directories = '$T'
port = $PORT
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
pg1-port=$PORT
EOC
chown postgres $T/pgbackrest.conf
run $B/pg_ctl -D $T/pg -l $T/pg.log -w start >/dev/null
run pgbench -h $T -p $PORT -i -q -s $SCALE postgres >/dev/null 2>&1
run psql -h $T -p $PORT -qAt -c "checkpoint" postgres
SIZE=$(du -sb --exclude=pg_wal $T/pg | cut -f1)
run pgbackrest --config=$T/pgbackrest.conf --stanza=bench stanza-create >/dev/null 2>&1
