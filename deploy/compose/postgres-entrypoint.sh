#!/bin/bash
# First start on an empty volume: initdb, the superuser's password from
# POSTGRES_PASSWORD_FILE, and one database per name in POSTGRES_DATABASES (owner
# POSTGRES_USER). Later starts find PG_VERSION and only run the server.
set -euo pipefail
user="${POSTGRES_USER:-churn}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U "$user" --pwfile="$POSTGRES_PASSWORD_FILE" -A scram-sha-256 \
    -E UTF8 >/dev/null
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start \
    >/dev/null
  for db in ${POSTGRES_DATABASES:-churn}; do
    PGPASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")" createdb -h /tmp -U "$user" "$db"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp "$@"
