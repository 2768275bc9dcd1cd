#!/usr/bin/env bash
# Starts a throw-away PostgreSQL server on loopback for the test suite and prints its SQLAlchemy URL
# on the last line of standard output (the tests read it from KD_TEST_PG_URL).
#
#   url=$(bash .ci/postgres.sh | tail -1)   # install (Debian package) if missing, init, start
#   bash .ci/postgres.sh stop               # stop it and remove its data folder
#
# The server runs as the `postgres` system user (initdb refuses root), keeps its data in
# $KD_PG_DIR (default /tmp/kd-pg) and listens on 127.0.0.1:$KD_PG_PORT (default 54329). For tests it
# runs with durability off (fsync, synchronous_commit); KD_PG_DURABLE=1 keeps the server defaults
# (what bench/ingest.py --postgres should measure).
set -euo pipefail
DIR="${KD_PG_DIR:-/tmp/kd-pg}"
PORT="${KD_PG_PORT:-54329}"

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

if [ "${1:-start}" = stop ]; then
  BIN=$(find_bin) || exit 0
  [ -d "$DIR/data" ] && as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
  exit 0
fi

if ! BIN=$(find_bin); then
  echo "installing PostgreSQL from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  BIN=$(find_bin)
fi

if [ -f "$DIR/data/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  :  # already running
else
  rm -rf "$DIR"
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$DIR"
  as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  OPTS="-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR -c max_connections=200"
  if [ "${KD_PG_DURABLE:-0}" != 1 ]; then
    # Tests create and drop many small databases: durability buys them nothing.
    OPTS="$OPTS -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start -o "$OPTS" >/dev/null
fi
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
