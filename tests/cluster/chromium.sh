#!/usr/bin/env bash
# Debian's Chromium for the tests that render a page in a real headless browser
# (tests/integration/test_report_browser.py, through tests/cluster/chromium.py).
#
#   tests/cluster/chromium.sh install   apt-get install chromium (fast no-op when present)
#   tests/cluster/chromium.sh path      print the browser's path; exit 3 when it is not installed
#
# Exit codes: 0 ok, 1 failure (with the apt log's tail), 2 usage, 3 impossible here (not root,
# no apt-get/dpkg): the pytest fixture skips on 3 unless CI=true.
#
# Needs: Debian/Ubuntu and root for `install`. Only Debian's package is used: nothing downloads a
# browser build of its own.
set -euo pipefail

SELF=$(basename "$0")
BROWSER=${PRUNESWEEP_CHROMIUM:-/usr/bin/chromium}
PACKAGES=(chromium fonts-dejavu-core)  # a font for the page's text in screenshots
LOG=${TMPDIR:-/tmp}/prunesweep-chromium-install.log

info() { printf '%s: %s\n' "$SELF" "$*" >&2; }
impossible() { info "$*"; exit 3; }

cmd_install() {
    if [[ -x $BROWSER ]]; then
        info "install: $BROWSER is present"
        return 0
    fi
    command -v apt-get >/dev/null && command -v dpkg >/dev/null || impossible "no apt-get/dpkg: install Chromium by hand"
    [[ $(id -u) == 0 ]] || impossible "not root: run 'apt-get install chromium' as root"
    local t
    t=$(date +%s)
    info "install: installing ${PACKAGES[*]} (log: $LOG)"
    export DEBIAN_FRONTEND=noninteractive
    local wait=(-o DPkg::Lock::Timeout=300)  # another apt-get (a cluster's install) may hold the lock a while
    # the package lists may be missing or stale on a fresh machine: update once, then install
    if ! apt-get install "${wait[@]}" -y -qq --no-install-recommends "${PACKAGES[@]}" >"$LOG" 2>&1; then
        apt-get update "${wait[@]}" -qq >>"$LOG" 2>&1 || { tail -n 25 "$LOG" >&2; info "apt-get update failed"; exit 1; }
        apt-get install "${wait[@]}" -y -qq --no-install-recommends "${PACKAGES[@]}" >>"$LOG" 2>&1 ||
            { tail -n 25 "$LOG" >&2; info "apt-get install ${PACKAGES[*]} failed"; exit 1; }
    fi
    [[ -x $BROWSER ]] || { info "installed, but $BROWSER is missing"; exit 1; }
    info "install: done in $(($(date +%s) - t)) s"
}

cmd_path() {
    [[ -x $BROWSER ]] || impossible "$BROWSER is not installed (run: $0 install)"
    echo "$BROWSER"
}

case "${1:-}" in
    install) cmd_install ;;
    path) cmd_path ;;
    *) echo "usage: $SELF {install | path}" >&2; exit 2 ;;
esac
