#!/usr/bin/env bash
# prunesweep's own MLflow tracking server on 127.0.0.1, for the tracking tests (`tracking: {mlflow: ...}`
# in a sweep file) and for trying it by hand.
#
#   tests/cluster/mlflow.sh install    pip install mlflow (the `mlflow` extra's range) when it is missing
#   tests/cluster/mlflow.sh start      start the server; idempotent
#   tests/cluster/mlflow.sh stop       stop exactly this server (its process group)
#   tests/cluster/mlflow.sh status     exit 0 when this server answers, 1 otherwise
#   tests/cluster/mlflow.sh env        print the export line
#
# `start` prints `export PRUNESWEEP_TEST_MLFLOW_URI=http://127.0.0.1:PORT` on stdout (messages go to
# stderr), so `eval "$(tests/cluster/mlflow.sh start)"` puts it in the shell; a sweep file then says
# `tracking: {mlflow: {uri: http://127.0.0.1:PORT}}`.
#
# Everything (the SQLite backend store, the artifacts, the log, the PID) lives under one folder:
# $PRUNESWEEP_MLFLOW_DIR, default /tmp/prunesweep-mlflow. The server listens on 127.0.0.1 only, on
# $PRUNESWEEP_MLFLOW_PORT (default 6840; when that port is taken by something else, the next free one
# up to +20 is used and remembered).
#
# Exit codes: 0 ok, 1 failure (with the log tail), 2 usage, 3 impossible here (no mlflow and no pip):
# the pytest fixture skips on 3 unless CI=true.
set -euo pipefail
# The daemons started here must not inherit a caller's descriptors: one on a lock file (`flock LOCK this.sh`)
# would keep the lock held for as long as the daemons run. 255 is the script bash is reading.
for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    if ((fd > 2 && fd != 255)); then eval "exec ${fd}>&-" 2>/dev/null || true; fi
done

SELF=$(basename "$0")
DIR=$(realpath -m "${PRUNESWEEP_MLFLOW_DIR:-/tmp/prunesweep-mlflow}")
LOG=$DIR/server.log
PORT_FILE=$DIR/port
PID_FILE=$DIR/pid
PYTHON=${PYTHON:-python3}
# the `mlflow` extra of setup.cfg: the versions the tests ran with
REQUIREMENT='mlflow>=3.17,<4'

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

have_mlflow() { "$PYTHON" -c 'import mlflow.server' >/dev/null 2>&1; }

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

url() { printf 'http://127.0.0.1:%s' "$(cat "$PORT_FILE")"; }

answers() {
    [[ -r $PORT_FILE ]] || return 1
    "$PYTHON" - "$(url)/health" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1: never through a proxy
sys.exit(0 if opener.open(sys.argv[1], timeout=5).read().strip() == b"OK" else 1)
EOF
}

cmd_install() {
    if have_mlflow; then
        return 0
    fi
    "$PYTHON" -m pip --version >/dev/null 2>&1 || impossible "mlflow is not installed and there is no pip"
    info "installing $REQUIREMENT (pip)"
    "$PYTHON" -m pip install -q "$REQUIREMENT" >&2 || fail "pip install $REQUIREMENT failed"
    have_mlflow || fail "mlflow installed but cannot be imported"
}

cmd_start() {
    have_mlflow || impossible "mlflow is not installed (run: $SELF install)"
    mkdir -p "$DIR/artifacts"
    if answers; then
        info "already running on port $(cat "$PORT_FILE")"
    else
        local port tries=0
        if [[ -r $PORT_FILE ]]; then port=$(cat "$PORT_FILE"); else port=${PRUNESWEEP_MLFLOW_PORT:-6840}; fi
        until port_free "$port"; do
            tries=$((tries + 1))
            ((tries <= 20)) || fail "no free port near ${PRUNESWEEP_MLFLOW_PORT:-6840}"
            port=$((port + 1))
        done
        echo "$port" >"$PORT_FILE"
        info "starting MLflow on 127.0.0.1:$port (log: $LOG)"
        # its own session: `stop` ends the server and the workers it forks, and nothing else
        setsid "$PYTHON" -m mlflow server --host 127.0.0.1 --port "$port" --workers 1 \
            --backend-store-uri "sqlite:///$DIR/mlflow.db" --default-artifact-root "$DIR/artifacts" \
            </dev/null >"$LOG" 2>&1 &
        echo $! >"$PID_FILE"
        local waited=0
        until answers; do
            kill -0 "$(cat "$PID_FILE")" 2>/dev/null || fail "the server exited while starting"
            ((waited < 180)) || fail "the server does not answer on 127.0.0.1:$port after 180 s"
            sleep 1
            waited=$((waited + 1))
        done
        info "answering after ${waited} s"
    fi
    echo "export PRUNESWEEP_TEST_MLFLOW_URI=$(url)"
}

cmd_stop() {
    [[ -r $PID_FILE ]] || return 0
    local pid
    pid=$(cat "$PID_FILE")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) answers || exit 1 ;;
    env) [[ -r $PORT_FILE ]] || fail "not started"; echo "export PRUNESWEEP_TEST_MLFLOW_URI=$(url)" ;;
    *) printf 'usage: %s install|start|stop|status|env\n' "$SELF" >&2; exit 2 ;;
esac
