# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared by scripts/moto-start, scripts/moto-stop and scripts/run-tests (sourced,
# not run): where the local moto server keeps its state, and how to find its
# process. Expects ROOT (the repo root) to be set.

STACK="${CONNECTD_STACK_DIR:-$ROOT/build/stack}"
mkdir -p "$STACK"
STACK="$(cd "$STACK" && pwd)"
MDIR="$STACK/moto"             # server state: pid, port, log (moto keeps data in memory)
MPIDFILE="$MDIR/moto.pid"
MPORTFILE="$MDIR/port"         # the port the running server listens on
MLOG="$MDIR/server.log"
MENV="$STACK/moto.env"         # what tests source
MOTO_SERVER="$ROOT/.deps/venv/bin/moto_server"

# True when PID is alive and is the moto server of this state dir (not a
# reused pid): it runs moto_server and was started in $MDIR.
moto_is_ours() {
  local pid="$1" cmd
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"$MOTO_SERVER "* ]] || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$MDIR" ]
}

# Prints the pid of this state dir's running moto server, if any (pid file
# first, then the process table, in case the pid file was lost).
moto_running_pid() {
  local pid=""
  [ -f "$MPIDFILE" ] && pid="$(cat "$MPIDFILE" 2>/dev/null || true)"
  if moto_is_ours "$pid"; then echo "$pid"; return 0; fi
  for pid in $(pgrep -f -- "$MOTO_SERVER " 2>/dev/null || true); do
    if moto_is_ours "$pid"; then echo "$pid"; return 0; fi
  done
  return 1
}

# Prints the port PID's moto_server was started with (its "-p N" argument).
moto_port_of() {
  local prev="" a
  while IFS= read -r -d '' a; do
    if [ "$prev" = "-p" ]; then echo "$a"; return 0; fi
    prev="$a"
  done <"/proc/$1/cmdline"
  return 1
}
