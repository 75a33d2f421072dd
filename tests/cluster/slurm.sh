#!/usr/bin/env bash
# prunesweep's own single-node SLURM cluster on localhost, with real accounting
# (slurmdbd + MariaDB), for tests and for trying the SLURM backend by hand.
#
#   tests/cluster/slurm.sh install                  apt-get the packages (fast no-op when present)
#   tests/cluster/slurm.sh start [--no-accounting]  start (or repair, or switch accounting); idempotent
#   tests/cluster/slurm.sh stop                     cancel this cluster's jobs, stop exactly its daemons
#   tests/cluster/slurm.sh status                   what runs; exit 0 when up and healthy, 1 otherwise
#   tests/cluster/slurm.sh env                      print the export lines (same as $DIR/env.sh)
#
# `start` prints `export SLURM_CONF=...` lines on stdout (messages go to stderr), so
#   eval "$(tests/cluster/slurm.sh start)"   or   . /tmp/prunesweep-slurm/env.sh
# puts sinfo/sbatch/sacct/... (and submitit, which calls them) on this cluster.
# When /etc/slurm/slurm.conf does not exist, `start` also links it to this cluster's
# slurm.conf so plain `sinfo` works in any process; `stop` removes that link again. A real
# /etc/slurm/slurm.conf (not our link) is never touched. PRUNESWEEP_SLURM_ETC_LINK=0 disables it.
#
# Everything (config, munge key and socket, state, spool, logs, PID files, MariaDB datadir and
# socket) lives under one folder: $PRUNESWEEP_SLURM_DIR, default /tmp/prunesweep-slurm.
# Every daemon listens on 127.0.0.1 only: slurmctld 6817, slurmd 6818, slurmdbd 6819,
# mariadbd 6820 (PRUNESWEEP_SLURM_PORT_BASE moves all four). munge uses its own socket and key.
# Other env: PRUNESWEEP_SLURM_MAX_ARRAY_SIZE (default 1001, SLURM's default),
# PRUNESWEEP_SLURM_MAX_JOB_COUNT (default 50000; SLURM's 10000 fills up within the hour that
# MinJobAge=3600 keeps finished jobs -- every array task counts -- and then sbatch blocks).
#
# Exit codes: 0 ok, 1 failure (with the relevant log tail), 2 usage, 3 impossible here
# (not root, no apt-get/dpkg, packages missing): the pytest fixture skips on 3 unless CI=true.
#
# Needs: Debian/Ubuntu, root. Works without systemd (daemons are started by hand).
set -euo pipefail
# The daemons started here must not inherit a caller's descriptors: one on a lock file (`flock LOCK this.sh`)
# would keep the lock held for as long as the daemons run. 255 is the script bash is reading.
for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    if ((fd > 2 && fd != 255)); then eval "exec ${fd}>&-" 2>/dev/null || true; fi
done

SELF=$(basename "$0")
DIR=$(realpath -m "${PRUNESWEEP_SLURM_DIR:-/tmp/prunesweep-slurm}")
PORT_BASE=${PRUNESWEEP_SLURM_PORT_BASE:-6817}
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
MAX_ARRAY=${PRUNESWEEP_SLURM_MAX_ARRAY_SIZE:-1001}
MAX_JOBS=${PRUNESWEEP_SLURM_MAX_JOB_COUNT:-50000}  # every array task counts, and stays MinJobAge=3600 s
ETC_LINK=${PRUNESWEEP_SLURM_ETC_LINK:-1}
CLUSTER=prunesweep
PARTITION=local
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

CONF=$DIR/etc/slurm.conf
DBD_CONF=$DIR/etc/slurmdbd.conf
ENV_FILE=$DIR/env.sh
RUN=$DIR/run
LOG=$DIR/log
MUNGE_DIR=$DIR/munge          # owned by user munge (munged runs as munge)
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
MUNGE_PID=$MUNGE_DIR/munged.pid
MUNGE_LOG=$MUNGE_DIR/munged.log
DB_DIR=$DIR/mysql             # owned by user mysql (mariadbd runs as mysql)
DB_SOCKET=$DB_DIR/mysqld.sock
DB_PID=$DB_DIR/mariadbd.pid
DB_LOG=$DB_DIR/mariadbd.log
DBD_PID=$RUN/slurmdbd.pid
CTLD_PID=$RUN/slurmctld.pid
SLURMD_PID=$RUN/slurmd.pid
ETC_SLURM_CONF=/etc/slurm/slurm.conf

export SLURM_CONF=$CONF
export PRUNESWEEP_SLURM_DIR=$DIR   # daemons inherit it: how we recognise ours in /proc

DBD_STARTED=0

# ---------------------------------------------------------------- helpers
info() { printf '%s: %s\n' "$SELF" "$*" >&2; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
tail_logs() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 25 "$f" >&2 || true
    done
}
# fail MESSAGE [LOG...]: print the message and the logs' tails, exit 1
fail() {
    local msg=$1; shift
    printf '%s: error: %s\n' "$SELF" "$msg" >&2
    tail_logs "$@"
    exit 1
}
impossible() { printf '%s: cannot run here: %s\n' "$SELF" "$*" >&2; exit 3; }

# alive PID: the process exists and is not a zombie
alive() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    state=$(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# ours NAME PIDFILE: print the PID when the PID file names a live NAME process of this folder
ours() {
    local name=$1 pidfile=$2 pid
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile" 2>/dev/null) || return 1
    alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
    # its command line or its environment names this folder
    local seen
    seen=$({ tr '\0' '\n' <"/proc/$pid/cmdline"; tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null || true)
    grep -F -e "$DIR/" <<<"$seen" >/dev/null || grep -Fx "PRUNESWEEP_SLURM_DIR=$DIR" <<<"$seen" >/dev/null || return 1
    echo "$pid"
}

# wait_until SECONDS COMMAND...: poll every 0.1 s
wait_until() {
    local deadline
    deadline=$(awk -v n="$(date +%s.%N)" -v t="$1" 'BEGIN { printf "%.3f", n + t }'); shift
    until "$@" >/dev/null 2>&1; do
        awk -v d="$deadline" -v n="$(date +%s.%N)" 'BEGIN { exit !(n > d) }' && return 1
        sleep 0.1
    done
}

# ready_or_dead PID COMMAND...: COMMAND succeeds, or the daemon PID is gone (stop waiting early)
ready_or_dead() {
    local pid=$1; shift
    "$@" || ! alive "$pid"
}
pidfile_dead() { [[ -s $1 ]] && ! alive "$(tr -dc '0-9' <"$1")"; }  # a daemon wrote its PID and died

# port_busy PORT: something listens on TCP PORT (any address)
port_busy() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
need_port() {  # need_port PORT WHAT
    if port_busy "$1"; then
        fail "port $1 (for $2) is already in use by another process; see: ss -ltnp 'sport = :$1'. Set PRUNESWEEP_SLURM_PORT_BASE to move this cluster's ports."
    fi
}

# stop_pid NAME PIDFILE: SIGTERM our daemon, wait for it to exit (SIGKILL after 30 s)
stop_pid() {
    local name=$1 pidfile=$2 pid t
    if ! pid=$(ours "$name" "$pidfile"); then rm -f "$pidfile"; return 0; fi
    t=$(date +%s.%N)
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until 30 eval "! alive $pid"; then
        info "$name ($pid) ignored SIGTERM for 30 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 5 eval "! alive $pid" || fail "$name ($pid) does not exit"
    fi
    rm -f "$pidfile"
    info "stopped $name (pid $pid) in $(since "$t") s"
}

# pids of slurmstepd processes of this cluster: they hold sockets in our slurmd spool folder
stepd_pids() {
    local inodes pid fd
    inodes=$(awk -v d="$DIR/spool/" 'index($8, d) == 1 { print $7 }' /proc/net/unix 2>/dev/null | sort -u)
    [[ -n $inodes ]] || return 0
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == slurmstepd ]] || continue
        for fd in /proc/"$pid"/fd/*; do
            if [[ $(readlink "$fd" 2>/dev/null) =~ ^socket:\[([0-9]+)\]$ ]] &&
                grep -qx "${BASH_REMATCH[1]}" <<<"$inodes"; then
                echo "$pid"
                break
            fi
        done
    done
}

# descendants PID...: every process below these (by parent PID), one line
descendants() {
    ps -eo pid=,ppid= | awk -v roots="$*" '
        { parent[$1] = $2 }
        END {
            n = split(roots, r, " "); for (i = 1; i <= n; i++) mark[r[i]] = 1
            do { changed = 0
                 for (p in parent) if (!(p in mark) && (parent[p] in mark)) { mark[p] = 2; changed = 1 }
            } while (changed)
            for (p in mark) if (mark[p] == 2) printf "%s ", p
        }'
}

need_root() { [[ $EUID -eq 0 ]] || impossible "must run as root (daemons run as root, munge and mysql)"; }
need_binaries() {
    local b missing=()
    for b in "$@"; do command -v "$b" >/dev/null 2>&1 || [[ -x /usr/sbin/$b ]] || missing+=("$b"); done
    ((${#missing[@]} == 0)) || impossible "not installed: ${missing[*]} (run: $0 install)"
}

short_host() { hostname -s 2>/dev/null || hostname; }

# ---------------------------------------------------------------- install
cmd_install() {
    local p missing=() t policy_made=0
    t=$(date +%s.%N)
    command -v dpkg-query >/dev/null 2>&1 || impossible "no dpkg: not a Debian/Ubuntu system"
    for p in "${PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *"ok installed"* ]] || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        info "install: all packages present ($(since "$t") s)"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || impossible "no apt-get; missing packages: ${missing[*]}"
    [[ $EUID -eq 0 ]] || impossible "not root; missing packages: ${missing[*]}"
    info "install: installing ${missing[*]}"
    # keep the packages' own service scripts from starting system daemons (systemd machines)
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        policy_made=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    local aptlog=$LOG/install.log
    mkdir -p "$LOG"
    apt-get update -qq >"$aptlog" 2>&1 || fail "apt-get update failed" "$aptlog"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1 ||
        fail "apt-get install ${missing[*]} failed" "$aptlog"
    ((policy_made)) && rm -f /usr/sbin/policy-rc.d && trap - EXIT
    info "install: done in $(since "$t") s (log: $aptlog)"
}

# ---------------------------------------------------------------- config
write_if_changed() {  # write_if_changed FILE MODE < content; returns 0 when it changed
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then rm -f "$tmp"; return 1; fi
    mv -f "$tmp" "$file"
    return 0
}

slurm_conf() {  # slurm_conf ACCOUNTING(0|1)
    local host cpus mem
    host=$(short_host)
    cpus=$(nproc)
    mem=$(awk '/^MemTotal:/ { m = int($2 / 1024) - 1024; if (m < 256) m = 256; print m }' /proc/meminfo)
    cat <<EOF
# written by tests/cluster/slurm.sh; rewritten on every start
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
EOF
    if (($1)); then
        cat <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
EOF
    else
        echo "AccountingStorageType=accounting_storage/none"
    fi
    cat <<EOF
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
# Most sites rank jobs with priority/multifactor. Only the partition's factor weighs here, so every job starts
# at the same priority and its nice alone orders it; priority/basic (SLURM's default) instead counts down
# from the lowest priority seen, and a long-lived cluster sits at its floor, 1, where no nice orders anything.
PriorityType=priority/multifactor
PriorityWeightPartition=1000000
PriorityWeightAge=0
PriorityWeightFairshare=0
PriorityWeightJobSize=0
PriorityWeightQOS=0
PriorityWeightAssoc=0
PriorityCalcPeriod=1
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=1,bf_interval=1
KillWait=5
MinJobAge=3600
MaxJobCount=$MAX_JOBS
SlurmdParameters=config_overrides
MailProg=/bin/true
MaxArraySize=$MAX_ARRAY
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

db_password() {
    local f=$DIR/etc/dbpass
    [[ -s $f ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$f")
    cat "$f"
}

slurmdbd_conf() {
    cat <<EOF
# written by tests/cluster/slurm.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
CommunicationParameters=NoInAddrAny
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$DBD_PID
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(db_password)
StorageLoc=slurm_acct_db
EOF
}

write_env() {
    local content
    content=$(printf 'export SLURM_CONF=%q\nexport PRUNESWEEP_SLURM_DIR=%q\n' "$CONF" "$DIR")
    write_if_changed "$ENV_FILE" 644 <<<"$content" || true
}

link_etc() {
    [[ $ETC_LINK == 1 ]] || return 0
    if [[ -L $ETC_SLURM_CONF || ! -e $ETC_SLURM_CONF ]]; then
        local target
        target=$(readlink "$ETC_SLURM_CONF" 2>/dev/null || true)
        if [[ -z $target || $target == "$CONF" || ! -e $target ]]; then
            mkdir -p "$(dirname "$ETC_SLURM_CONF")"
            ln -sfn "$CONF" "$ETC_SLURM_CONF"
            return 0
        fi
        info "note: $ETC_SLURM_CONF links to $target (another cluster); left alone: use SLURM_CONF"
    else
        info "note: $ETC_SLURM_CONF is a real file; left alone: use SLURM_CONF=$CONF"
    fi
}
unlink_etc() {
    if [[ -L $ETC_SLURM_CONF && $(readlink "$ETC_SLURM_CONF") == "$CONF" ]]; then rm -f "$ETC_SLURM_CONF"; fi
}

# ---------------------------------------------------------------- daemons
start_munge() {
    if ours munged "$MUNGE_PID" >/dev/null; then return 0; fi
    local t; t=$(date +%s.%N)
    rm -f "$MUNGE_PID"
    install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        head -c 1024 /dev/urandom >"$MUNGE_DIR/munge.key"
    fi
    chown munge:munge "$MUNGE_DIR/munge.key"
    chmod 0400 "$MUNGE_DIR/munge.key"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    runuser -u munge -- /usr/sbin/munged --force --socket="$MUNGE_SOCKET" \
        --key-file="$MUNGE_DIR/munge.key" --pid-file="$MUNGE_PID" --log-file="$MUNGE_LOG" \
        --seed-file="$MUNGE_DIR/munged.seed" 9>&- </dev/null >>"$LOG/munged.out" 2>&1 ||
        fail "munged did not start" "$MUNGE_LOG" "$LOG/munged.out"
    wait_until 10 munge_ok || fail "munge does not answer on $MUNGE_SOCKET" "$MUNGE_LOG"
    info "started munged (pid $(cat "$MUNGE_PID")) in $(since "$t") s"
}
munge_ok() { munge --socket="$MUNGE_SOCKET" -n </dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null; }

db() { mariadb --no-defaults --protocol=socket --socket="$DB_SOCKET" -u root "$@"; }

start_mariadb() {
    if ours mariadbd "$DB_PID" >/dev/null; then return 0; fi
    local t; t=$(date +%s.%N)
    need_port "$DB_PORT" mariadbd
    install -d -o mysql -g mysql -m 0755 "$DB_DIR"
    install -d -o mysql -g mysql -m 0700 "$DB_DIR/data"
    if [[ ! -d $DB_DIR/data/mysql ]]; then
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR/data" \
            --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install-db.log" 2>&1 ||
            fail "mariadb-install-db failed" "$LOG/mariadb-install-db.log"
    fi
    rm -f "$DB_PID" "$DB_SOCKET"
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB_DIR/data" \
        --socket="$DB_SOCKET" --pid-file="$DB_PID" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --skip-name-resolve --log-error="$DB_LOG" --innodb-buffer-pool-size=256M \
        --innodb-lock-wait-timeout=900 --innodb-log-file-size=64M 9>&- </dev/null >/dev/null 2>&1 &
    local pid=$!
    wait_until 60 ready_or_dead "$pid" db -e 'SELECT 1' || true
    alive "$pid" || fail "mariadbd exited" "$DB_LOG"
    db -e 'SELECT 1' >/dev/null 2>&1 || fail "mariadbd does not answer on $DB_SOCKET" "$DB_LOG"
    wait_until 10 ours mariadbd "$DB_PID" || fail "mariadbd wrote no PID file $DB_PID" "$DB_LOG"
    local pw; pw=$(db_password)
    db <<EOF || fail "could not set up the accounting database" "$DB_LOG"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
    info "started mariadbd (pid $(cat "$DB_PID")) in $(since "$t") s"
}

dbd_ok() { sacctmgr -n -P show cluster format=cluster; }

start_slurmdbd() {
    local changed=0
    slurmdbd_conf | write_if_changed "$DBD_CONF" 600 && changed=1
    if ours slurmdbd "$DBD_PID" >/dev/null; then
        ((changed)) || return 0
        stop_pid slurmdbd "$DBD_PID"
    fi
    local t; t=$(date +%s.%N)
    need_port "$DBD_PORT" slurmdbd
    rm -f "$DBD_PID"
    slurmdbd 9>&- </dev/null >>"$LOG/slurmdbd.out" 2>&1 || fail "slurmdbd did not start" "$LOG/slurmdbd.log" "$LOG/slurmdbd.out"
    wait_until 30 ours slurmdbd "$DBD_PID" || fail "slurmdbd wrote no PID file" "$LOG/slurmdbd.log" "$LOG/slurmdbd.out"
    DBD_STARTED=1
    info "started slurmdbd (pid $(cat "$DBD_PID")) in $(since "$t") s"
}

ctld_up() { [[ $(scontrol ping 2>/dev/null) == *"is UP"* ]]; }

start_slurmctld() {
    local t; t=$(date +%s.%N)
    need_port "$CTLD_PORT" slurmctld
    rm -f "$CTLD_PID"
    slurmctld -f "$CONF" 9>&- </dev/null >>"$LOG/slurmctld.out" 2>&1 ||
        fail "slurmctld did not start" "$LOG/slurmctld.log" "$LOG/slurmctld.out"
    wait_until 30 eval 'ctld_up || pidfile_dead "$CTLD_PID"' || true
    ctld_up || fail "slurmctld does not answer (scontrol ping)" "$LOG/slurmctld.log" "$LOG/slurmctld.out"
    info "started slurmctld (pid $(cat "$CTLD_PID")) in $(since "$t") s"
}

node_state() { sinfo -h -N -n "$(short_host)" -o '%t' 2>/dev/null | awk 'NR == 1'; }
# registered AFTER: this node's slurmd registered at or after AFTER (YYYY-MM-DDTHH:MM:SS)
registered() {
    local st
    st=$(scontrol show node "$(short_host)" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
    [[ -n $st && $st != None && ! $st < $1 ]]
}
node_ok() {
    local s; s=$(node_state)
    [[ $s =~ ^(idle|mix|alloc|comp)$ ]]
}
node_usable() {  # resume a down/drained node, then say whether it is usable
    local s; s=$(node_state)
    case $s in
        down* | drain* | drng* | fail*) scontrol update nodename="$(short_host)" state=resume >/dev/null 2>&1 || true ;;
    esac
    node_ok
}

start_slurmd() {
    local t since_ts; t=$(date +%s.%N)
    need_port "$SLURMD_PORT" slurmd
    rm -f "$SLURMD_PID"
    since_ts=$(date +%Y-%m-%dT%H:%M:%S)
    slurmd -f "$CONF" 9>&- </dev/null >>"$LOG/slurmd.out" 2>&1 || fail "slurmd did not start" "$LOG/slurmd.log" "$LOG/slurmd.out"
    wait_until 30 eval 'registered "$since_ts" || pidfile_dead "$SLURMD_PID"' || true
    registered "$since_ts" ||
        fail "slurmd did not register with slurmctld" "$LOG/slurmd.log" "$LOG/slurmd.out" "$LOG/slurmctld.log"
    info "started slurmd (pid $(cat "$SLURMD_PID")) in $(since "$t") s"
}

# ---------------------------------------------------------------- commands
cmd_start() {
    local accounting=1
    while (($#)); do
        case $1 in
            --no-accounting) accounting=0 ;;
            *) echo "usage: $SELF start [--no-accounting]" >&2; exit 2 ;;
        esac
        shift
    done
    need_root
    need_binaries slurmctld slurmd sinfo scontrol munged munge
    ((${#MUNGE_SOCKET} < 100)) || fail "PRUNESWEEP_SLURM_DIR is too long for a unix socket path: $DIR"
    ((accounting)) && need_binaries slurmdbd sacctmgr mariadbd mariadb-install-db mariadb
    local t; t=$(date +%s.%N)
    install -d -m 0755 "$DIR" "$DIR/etc" "$RUN" "$LOG" "$DIR/state" "$DIR/spool"
    exec 9>"$DIR/.lock"
    flock -w 120 9 || fail "another $SELF holds $DIR/.lock for 120 s"

    # slurm.conf first: every daemon and command (slurmdbd, sacctmgr too) reads it
    local conf_changed=0
    slurm_conf "$accounting" | write_if_changed "$CONF" 644 && conf_changed=1
    start_munge
    if ((accounting)); then
        start_mariadb
        start_slurmdbd
    fi
    # the cluster must be in the database before slurmctld connects (once per database)
    if ((accounting)) && { ((DBD_STARTED)) || [[ ! -e $DB_DIR/cluster-registered ]]; }; then
        wait_until 30 dbd_ok || fail "slurmdbd does not answer (sacctmgr show cluster)" "$LOG/slurmdbd.log"
        if ! grep -x "$CLUSTER" <<<"$(dbd_ok)" >/dev/null; then
            sacctmgr -i add cluster "$CLUSTER" >/dev/null || fail "sacctmgr add cluster $CLUSTER failed" "$LOG/slurmdbd.log"
            info "registered cluster $CLUSTER in the accounting database"
        fi
        touch "$DB_DIR/cluster-registered"
    fi

    local ctld_restarted=0 cold=0
    if ! ours slurmctld "$CTLD_PID" >/dev/null && [[ -z $(stepd_pids) ]]; then
        cold=1  # no job of this cluster can be running: any job the saved state calls running is stale
    fi
    if ours slurmctld "$CTLD_PID" >/dev/null; then
        if ((conf_changed)); then
            info "slurm.conf changed (accounting=$accounting): restarting slurmctld"
            stop_pid slurmctld "$CTLD_PID"
            start_slurmctld
            ctld_restarted=1
        else
            wait_until 30 ctld_up || fail "slurmctld runs but does not answer" "$LOG/slurmctld.log"
        fi
    else
        start_slurmctld
        ctld_restarted=1
    fi
    if ours slurmd "$SLURMD_PID" >/dev/null; then
        if ((conf_changed)); then
            scontrol reconfigure >/dev/null || fail "scontrol reconfigure failed" "$LOG/slurmctld.log"
        fi
    else
        start_slurmd
    fi
    wait_until 30 node_usable ||
        fail "node $(short_host) is not usable (state: $(node_state))" "$LOG/slurmd.log" "$LOG/slurmctld.log"
    if ((cold)); then
        local stale
        stale=$(squeue -h -t R,CG,CF,S -o %A 2>/dev/null | sort -u | tr '\n' ' ')
        if [[ -n ${stale// /} ]]; then
            # an unclean stop (slurmctld killed first, machine reset): free the node
            info "cancelling jobs left 'running' by an unclean stop: $stale"
            # shellcheck disable=SC2086
            scancel $stale 2>/dev/null || true
            wait_until 20 eval '[[ -z $(squeue -h -t R,CG,CF,S -o %A 2>/dev/null) ]]' ||
                fail "stale jobs do not end: $(squeue -h -t R,CG,CF,S -o '%A %T' | tr '\n' ' ')" "$LOG/slurmctld.log"
        fi
    fi

    if ((!accounting)); then  # a genuine cluster without accounting: no slurmdbd, no database
        stop_pid slurmdbd "$DBD_PID"
        stop_pid mariadbd "$DB_PID"
    fi
    write_env
    link_etc
    if ((conf_changed || ctld_restarted)); then
        info "cluster up (accounting=$( ((accounting)) && echo on || echo off)) in $(since "$t") s; env: . $ENV_FILE"
    else
        info "already up (accounting=$( ((accounting)) && echo on || echo off)); checked in $(since "$t") s"
    fi
    cat "$ENV_FILE"
}

cmd_stop() {
    [[ -d $DIR ]] || { info "nothing to stop ($DIR does not exist)"; return 0; }
    need_root
    local t; t=$(date +%s.%N)
    exec 9>"$DIR/.lock"
    flock -w 120 9 || fail "another $SELF holds $DIR/.lock for 120 s"
    rm -f "$ENV_FILE"
    unlink_etc
    if ours slurmctld "$CTLD_PID" >/dev/null && ctld_up; then
        local ids
        ids=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ')
        if [[ -n ${ids// /} ]]; then
            info "cancelling jobs: $ids"
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null || true
            wait_until 20 eval '[[ -z $(squeue -h -t R,CG,CF,S -o %A 2>/dev/null) ]]' ||
                info "jobs still ending after 20 s: $(squeue -h -t R,CG,CF,S -o %A | tr '\n' ' ')"
        fi
    fi
    stop_pid slurmd "$SLURMD_PID"
    local pids
    # job steps whose cancel never arrived (slurmctld was down): kill their processes, then them
    pids=$(stepd_pids | tr '\n' ' ')
    if [[ -n ${pids// /} ]]; then
        local tasks
        tasks=$(descendants $pids)
        info "killing leftover job steps: slurmstepd ${pids% }; their processes: ${tasks:-none}"
        # shellcheck disable=SC2086
        [[ -z $tasks ]] || kill -KILL $tasks 2>/dev/null || true
        if ! wait_until 2 eval '[[ -z $(stepd_pids) ]]'; then  # they retry slurmctld for long
            pids=$(stepd_pids | tr '\n' ' ')
            # shellcheck disable=SC2086
            [[ -z ${pids// /} ]] || kill -KILL $pids 2>/dev/null || true
        fi
    fi
    stop_pid slurmctld "$CTLD_PID"
    stop_pid slurmdbd "$DBD_PID"
    stop_pid mariadbd "$DB_PID"
    stop_pid munged "$MUNGE_PID"
    info "stopped in $(since "$t") s"
}

cmd_status() {
    local rc=0 name pidfile pid acct
    acct=$(grep -o 'accounting_storage/[a-z]*' "$CONF" 2>/dev/null || echo "not configured")
    echo "folder:     $DIR"
    echo "slurm.conf: $CONF ($acct)"
    for name in munged:$MUNGE_PID mariadbd:$DB_PID slurmdbd:$DBD_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
        pidfile=${name#*:}; name=${name%%:*}
        if pid=$(ours "$name" "$pidfile"); then
            printf '%-10s  running, pid %s\n' "$name" "$pid"
        else
            printf '%-10s  not running\n' "$name"
            case $name in
                mariadbd | slurmdbd) [[ $acct == accounting_storage/slurmdbd ]] && rc=1 ;;
                *) rc=1 ;;
            esac
        fi
    done
    local steps; steps=$(stepd_pids | tr '\n' ' ')
    [[ -n ${steps// /} ]] && echo "slurmstepd  pids $steps"
    if ((rc == 0)) && ctld_up && node_ok; then
        sinfo 2>/dev/null || true
        echo "healthy"
    else
        echo "not running or not healthy"
        rc=1
    fi
    return "$rc"
}

case ${1:-} in
    install) shift; cmd_install "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    env) printf 'export SLURM_CONF=%q\nexport PRUNESWEEP_SLURM_DIR=%q\n' "$CONF" "$DIR" ;;
    *) echo "usage: $SELF {install | start [--no-accounting] | stop | status | env}" >&2; exit 2 ;;
esac
