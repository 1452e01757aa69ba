# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared by scripts/redis-start, scripts/redis-stop and scripts/run-tests (sourced,
# not run): where the local redis-server keeps its state, and how to find its
# process. Expects ROOT (the repo root) to be set.

STACK="${CONNECTD_STACK_DIR:-$ROOT/build/stack}"
mkdir -p "$STACK"
STACK="$(cd "$STACK" && pwd)"
RDIR="$STACK/redis"            # server state: pid, port, log (no persistence)
RPIDFILE="$RDIR/redis.pid"
RPORTFILE="$RDIR/port"         # the port the running server listens on
RLOG="$RDIR/server.log"
RENV="$STACK/redis.env"        # what tests source
REDIS_SERVER="$(command -v redis-server 2>/dev/null || echo /usr/bin/redis-server)"
REDIS_CLI="$(command -v redis-cli 2>/dev/null || echo /usr/bin/redis-cli)"

# True when PID is alive and is the redis-server of this state dir (not a
# reused pid): its executable is redis-server and it was started in $RDIR.
# (redis-server rewrites its command line, so the executable is what we check.)
redis_is_ours() {
  local pid="$1" exe
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [ "$(basename "$exe")" = redis-server ] || [ "$(basename "$exe")" = redis-check-rdb ] || return 1
  [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$RDIR" ]
}

# Prints the pid of this state dir's running redis-server, if any (pid file
# first, then the process table, in case the pid file was lost).
redis_running_pid() {
  local pid=""
  [ -f "$RPIDFILE" ] && pid="$(cat "$RPIDFILE" 2>/dev/null || true)"
  if redis_is_ours "$pid"; then echo "$pid"; return 0; fi
  for pid in $(pgrep -x redis-server 2>/dev/null || true); do
    if redis_is_ours "$pid"; then echo "$pid"; return 0; fi
  done
  return 1
}

# Prints the port PID's redis-server listens on: the port file, else its
# process title ("redis-server 127.0.0.1:PORT").
redis_port_of() {
  local title
  if [ -f "$RPORTFILE" ] && [ -n "$(cat "$RPORTFILE" 2>/dev/null)" ]; then
    cat "$RPORTFILE"; return 0
  fi
  title="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" || return 1
  [[ "$title" =~ :([0-9]+) ]] || return 1
  echo "${BASH_REMATCH[1]}"
}
