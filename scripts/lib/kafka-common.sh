# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared by scripts/kafka-start and scripts/kafka-stop (sourced, not run):
# where the local broker keeps its state, and how to find its process.
# Expects ROOT (the repo root) to be set.

STACK="${CONNECTD_STACK_DIR:-$ROOT/build/stack}"
mkdir -p "$STACK"
STACK="$(cd "$STACK" && pwd)"
KDIR="$STACK/kafka"            # broker state: config, data, TLS, logs, pid
KPIDFILE="$KDIR/kafka.pid"
KLOG="$KDIR/server.log"
KPROPS="$KDIR/server.properties"
KDATA="$KDIR/data"
KTLS="$KDIR/tls"
KCREDS="$KDIR/credentials"     # SCRAM + keystore passwords, made once per state dir
KENV="$STACK/kafka.env"        # what tests source
KLIBS="$ROOT/.deps/kafka/libs"

# True when PID is alive and is the broker of this state dir (not a reused pid).
kafka_is_ours() {
  local pid="$1" cmd
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *" kafka.Kafka $KPROPS"* ]]
}

# Prints the pid of this state dir's running broker, if any (pid file first,
# then the process table, in case the pid file was lost).
kafka_running_pid() {
  local pid=""
  [ -f "$KPIDFILE" ] && pid="$(cat "$KPIDFILE" 2>/dev/null || true)"
  if kafka_is_ours "$pid"; then echo "$pid"; return 0; fi
  for pid in $(pgrep -f -- "kafka.Kafka $KPROPS" 2>/dev/null || true); do
    if kafka_is_ours "$pid"; then echo "$pid"; return 0; fi
  done
  return 1
}
