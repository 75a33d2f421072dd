#!/usr/bin/env bash
# prunesweep's own PostgreSQL server on 127.0.0.1, for the central results database's tests
# and for trying `results_db` by hand.
#
#   tests/cluster/postgres.sh install    apt-get install postgresql when its initdb is missing (fast no-op)
#   tests/cluster/postgres.sh start      initdb (first time) and start the server; idempotent
#   tests/cluster/postgres.sh stop       stop exactly this server (fast shutdown)
#   tests/cluster/postgres.sh status     exit 0 when this server answers, 1 otherwise
#   tests/cluster/postgres.sh env        print the export line
#
# `start` prints `export PRUNESWEEP_TEST_PG_URL=postgresql://prunesweep:PASSWORD@127.0.0.1:PORT/prunesweep`
# on stdout (messages go to stderr), so `eval "$(tests/cluster/postgres.sh start)"` puts it in the
# shell. The password is random, made at initdb and kept in $DIR/password (mode 600); clients
# over TCP authenticate with it (scram-sha-256), so tests see real password handling.
#
# Everything (data directory, socket, log, PID) lives under one folder: $PRUNESWEEP_PG_DIR, default
# /tmp/prunesweep-pg. The server listens on 127.0.0.1 only, on $PRUNESWEEP_PG_PORT (default 6830;
# when that port is taken by something else, the next free one up to +20 is used and remembered).
# initdb refuses to run as root: as root the server runs as the `postgres` user (runuser), else as
# the calling user.
#
# Exit codes: 0 ok, 1 failure (with the log tail), 2 usage, 3 impossible here (no PostgreSQL and no
# way to install it: not root or no apt-get): the pytest fixture skips on 3 unless CI=true.
set -euo pipefail
# The daemons started here must not inherit a caller's descriptors: one on a lock file (`flock LOCK this.sh`)
# would keep the lock held for as long as the daemons run. 255 is the script bash is reading.
for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    if ((fd > 2 && fd != 255)); then eval "exec ${fd}>&-" 2>/dev/null || true; fi
done

SELF=$(basename "$0")
DIR=$(realpath -m "${PRUNESWEEP_PG_DIR:-/tmp/prunesweep-pg}")
DATA=$DIR/data
LOG=$DIR/server.log
PORT_FILE=$DIR/port
PASSWORD_FILE=$DIR/password
USER_NAME=prunesweep
DATABASE=prunesweep

info() { printf '%s: %s\n' "$SELF" "$*" >&2; }
fail() {
    printf '%s: error: %s\n' "$SELF" "$1" >&2
    if [[ -s $LOG ]]; then
        printf -- '--- last lines of %s ---\n' "$LOG" >&2
        tail -n 25 "$LOG" >&2 || true
    fi
    exit 1
}
impossible() { printf '%s: cannot run here: %s\n' "$SELF" "$*" >&2; exit 3; }

bindir() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n $found && -x $found/initdb ]]; then
        echo "$found"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    else
        return 1
    fi
}

# as_owner CMD...: run as the server's owner (postgres when we are root)
as_owner() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cmd_install() {
    if bindir >/dev/null; then
        return 0
    fi
    [[ $(id -u) == 0 ]] || impossible "PostgreSQL is not installed and installing it needs root"
    command -v apt-get >/dev/null 2>&1 || impossible "PostgreSQL is not installed and there is no apt-get"
    info "installing postgresql (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || fail "apt-get update failed"
    apt-get install -y -qq --no-install-recommends postgresql >&2 || fail "apt-get install postgresql failed"
    bindir >/dev/null || fail "postgresql installed but no initdb found"
}

url() {
    printf 'postgresql://%s:%s@127.0.0.1:%s/%s' "$USER_NAME" "$(cat "$PASSWORD_FILE")" "$(cat "$PORT_FILE")" "$DATABASE"
}

answers() {
    local bin
    bin=$(bindir) || return 1
    [[ -r $PORT_FILE ]] || return 1
    as_owner "$bin/pg_isready" -q -h 127.0.0.1 -p "$(cat "$PORT_FILE")" -d "$DATABASE" -U "$USER_NAME"
}

cmd_start() {
    local bin owner port
    bin=$(bindir) || impossible "PostgreSQL is not installed (run: $SELF install)"
    if [[ $(id -u) == 0 ]]; then
        id postgres >/dev/null 2>&1 || impossible "no postgres user to run the server as"
        owner=postgres
    else
        owner=$(id -un)
    fi
    mkdir -p "$DIR"
    chown "$owner" "$DIR"
    chmod 700 "$DIR"
    if [[ ! -s $DATA/PG_VERSION ]]; then
        info "initdb $DATA"
        umask 077
        head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PASSWORD_FILE"
        chown "$owner" "$PASSWORD_FILE"
        as_owner "$bin/initdb" -D "$DATA" -U "$USER_NAME" --pwfile="$PASSWORD_FILE" --auth-local=trust \
            --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$DIR/initdb.log" 2>&1 \
            || { cat "$DIR/initdb.log" >&2; fail "initdb failed"; }
    fi
    if answers 2>/dev/null; then
        info "already running on port $(cat "$PORT_FILE")"
    else
        if [[ -r $PORT_FILE ]]; then port=$(cat "$PORT_FILE"); else port=${PRUNESWEEP_PG_PORT:-6830}; fi
        local tries=0
        until port_free "$port"; do
            tries=$((tries + 1))
            ((tries <= 20)) || fail "no free port near ${PRUNESWEEP_PG_PORT:-6830}"
            port=$((port + 1))
        done
        echo "$port" >"$PORT_FILE"
        chown "$owner" "$PORT_FILE"
        info "starting PostgreSQL on 127.0.0.1:$port"
        as_owner "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $DIR -c fsync=off" start >&2 \
            || fail "pg_ctl start failed"
        if ! as_owner "$bin/psql" -h "$DIR" -p "$port" -U "$USER_NAME" -d postgres -tAc \
                "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1; then
            as_owner "$bin/createdb" -h "$DIR" -p "$port" -U "$USER_NAME" "$DATABASE" || fail "createdb failed"
        fi
    fi
    answers || fail "the server does not answer on 127.0.0.1:$(cat "$PORT_FILE")"
    echo "export PRUNESWEEP_TEST_PG_URL=$(url)"
}

cmd_stop() {
    local bin
    bin=$(bindir) || return 0
    [[ -s $DATA/PG_VERSION ]] || return 0
    if as_owner "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w stop >&2 || fail "pg_ctl stop failed"
    fi
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) answers || exit 1 ;;
    env) [[ -r $PASSWORD_FILE && -r $PORT_FILE ]] || fail "not started"; echo "export PRUNESWEEP_TEST_PG_URL=$(url)" ;;
    *) printf 'usage: %s install|start|stop|status|env\n' "$SELF" >&2; exit 2 ;;
esac
