#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft) for development, tests and CI.
#   kafka.sh start|stop|status
# Environment (all optional):
#   TWEETPULSE_KAFKA_PORT        broker port on 127.0.0.1 (default 9092); the controller uses PORT+1
#   TWEETPULSE_KAFKA_VERSION     Apache Kafka version from Maven Central (default 4.1.1)
#   TWEETPULSE_KAFKA_CACHE       where the resolved jars live (default ~/.cache/tweetpulse)
#   TWEETPULSE_KAFKA_STATE       data, logs and pid of this broker (default ~/.local/state/tweetpulse/kafka-PORT)
#   TWEETPULSE_KAFKA_HEAP        JVM heap (default 1g: plenty for a 2-core, 24 GiB machine)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
host=127.0.0.1
port="${TWEETPULSE_KAFKA_PORT:-9092}"
controller_port=$((port + 1))
version="${TWEETPULSE_KAFKA_VERSION:-4.1.1}"
cache="${TWEETPULSE_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tweetpulse}"
libs="$cache/kafka-$version/libs"
state="${TWEETPULSE_KAFKA_STATE:-${XDG_STATE_HOME:-$HOME/.local/state}/tweetpulse/kafka-$port}"
heap="${TWEETPULSE_KAFKA_HEAP:-1g}"
pidfile="$state/kafka.pid"
props="$state/server.properties"
logdir="$state/logs"

log() { echo "kafka: $*" >&2; }

running_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null && grep -q "kafka.Kafka" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"
  else
    return 1
  fi
}

port_open() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

resolve() {
  if [[ -f "$libs/kafka_2.13-$version.jar" ]]; then return; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is needed once to fetch Apache Kafka $version"; exit 1; }
  log "resolving Apache Kafka $version and its runtime dependencies from Maven Central into $libs"
  mkdir -p "$libs"
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" -Dkafka.version="$version" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs"
}

java_cp() { java -Xmx256m -cp "$libs/*" "$@"; }

configure() {
  mkdir -p "$state/data" "$logdir"
  sed -e "s#@PORT@#$port#g" -e "s#@CONTROLLER_PORT@#$controller_port#g" -e "s#@HOST@#$host#g" \
      -e "s#@LOG_DIRS@#$state/data#g" "$here/server.properties.template" > "$props"
  if [[ ! -f "$state/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java_cp kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    log "formatting KRaft storage in $state/data (cluster $cluster_id)"
    java_cp -Dlog4j2.configurationFile="$here/log4j2.yaml" -Dkafka.logs.dir="$logdir" \
      kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$props" >"$logdir/format.log" 2>&1 \
      || { cat "$logdir/format.log" >&2; exit 1; }
  fi
}

start() {
  if pid="$(running_pid)"; then log "already running (pid $pid) on $host:$port"; return 0; fi
  if port_open "$port"; then log "port $port is taken by another process"; exit 1; fi
  resolve
  configure
  log "starting Apache Kafka $version on $host:$port (state in $state)"
  nohup java -Xms256m -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/log4j2.yaml" -Dkafka.logs.dir="$logdir" \
    -cp "$libs/*" kafka.Kafka "$props" >"$logdir/stdout.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 240); do
    if ! running_pid >/dev/null; then
      log "broker exited during start; last lines of $logdir:"; tail -n 30 "$logdir/server.log" "$logdir/stdout.log" >&2 || true
      exit 1
    fi
    if port_open "$port" && grep -q "Kafka Server started" "$logdir/server.log" 2>/dev/null; then
      log "ready on $host:$port (pid $(cat "$pidfile"))"; return 0
    fi
    sleep 0.5
  done
  log "broker did not become ready within 120 s; see $logdir/server.log"; exit 1
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then log "not running on port $port"; rm -f "$pidfile"; return 0; fi
  log "stopping pid $pid"
  kill -TERM "$pid"
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "stopped"; return 0; }
    sleep 0.5
  done
  log "did not stop within 60 s; killing"; kill -KILL "$pid" 2>/dev/null || true; rm -f "$pidfile"
}

status() {
  if pid="$(running_pid)"; then
    echo "running: pid $pid, bootstrap $host:$port, Apache Kafka $version, state $state, log $logdir/server.log"
  else
    echo "stopped: bootstrap $host:$port, state $state"; return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
