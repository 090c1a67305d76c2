#!/usr/bin/env bash
# Services for the optional annotation tests: Debian's Chromium (browser end-to-end tests) and a
# PostgreSQL server on loopback with an empty test database (API and load tests against PostgreSQL).
#
#   eval "$(bash scripts/ci_services.sh)"
#
# Idempotent: what is installed is not installed again; a running server is reused. It never fails
# the caller: when apt, root or a service is unavailable it warns on stderr and prints no export for
# that service, so the tests that need it skip. Only `export ...` lines go to stdout.
set -u

PG_PORT="${RELIABLE_AD_PG_PORT:-5432}"
PG_USER="reliable_ad"
PG_PASSWORD="reliable_ad"
PG_DB="reliable_ad_test"

log() { echo "ci_services: $*" >&2; }

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo -n "$@"
  else return 1
  fi
}

APT_UPDATED=0
apt_install() {  # apt_install PACKAGE...: 0 when all are installed afterwards
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    log "warning: apt-get not found; cannot install ${missing[*]}"
    return 1
  fi
  if [[ $APT_UPDATED == 0 ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || { log "warning: apt-get update failed"; return 1; }
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || { log "warning: apt-get install ${missing[*]} failed"; return 1; }
}

# ---- Chromium -----------------------------------------------------------------------------------
if apt_install chromium && [[ -x /usr/bin/chromium ]]; then
  echo "export RELIABLE_AD_CHROMIUM=/usr/bin/chromium"
else
  log "warning: no Chromium; the browser tests will skip"
fi

# ---- PostgreSQL ---------------------------------------------------------------------------------
pg_run() {  # run a command as the postgres system user
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"
  else sudo -n -u postgres "$@"
  fi
}

start_postgres() {
  apt_install postgresql || return 1
  command -v pg_lsclusters >/dev/null 2>&1 || { log "warning: postgresql-common tools missing"; return 1; }
  local version
  version="$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)"
  [[ -n "$version" ]] || { log "warning: no PostgreSQL server binaries under /usr/lib/postgresql"; return 1; }
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version main"; then
    as_root pg_createcluster -p "$PG_PORT" "$version" main >&2 || { log "warning: pg_createcluster failed"; return 1; }
  fi
  if ! pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; then
    # loopback only; the tests never need another interface
    as_root pg_ctlcluster "$version" main start -o "-c listen_addresses=127.0.0.1 -p $PG_PORT" >&2 \
      || { log "warning: pg_ctlcluster start failed"; return 1; }
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 1
  done
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || { log "warning: PostgreSQL does not answer on 127.0.0.1:$PG_PORT"; return 1; }
  # role and database, created once; the role may create schemas (each test uses its own)
  pg_run psql -q -p "$PG_PORT" -v ON_ERROR_STOP=1 -d postgres >&2 <<SQL || { log "warning: cannot create role/database"; return 1; }
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\gexec
SQL
}

if start_postgres; then
  echo "export RELIABLE_AD_TEST_POSTGRES_URL=postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
else
  log "warning: no PostgreSQL; the PostgreSQL tests will skip"
fi
exit 0
