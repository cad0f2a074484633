#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft) for development, tests and CI.
#   kafka.sh start|stop|status
# Environment (all optional):
#   TWEETPULSE_KAFKA_PORT        broker port on 127.0.0.1 (default 9092); the controller uses PORT+1
#   TWEETPULSE_KAFKA_VERSION     Apache Kafka version from Maven Central (default 4.1.1)
#   TWEETPULSE_KAFKA_CACHE       where the resolved jars live (default ~/.cache/tweetpulse)
#   TWEETPULSE_KAFKA_STATE       data, logs and pid of this broker (default ~/.local/state/tweetpulse/kafka-PORT)
#   TWEETPULSE_KAFKA_HEAP        JVM heap (default 1g: plenty for a 2-core, 24 GiB machine)
#   TWEETPULSE_KAFKA_SECURITY    plaintext (default) or sasl_ssl: the client listener on PORT then takes
#                                SCRAM-SHA-512 over TLS only (inter-broker too); the controller stays on
#                                PLAINTEXT loopback (KRaft controllers cannot use SCRAM)
# With TWEETPULSE_KAFKA_SECURITY=sasl_ssl (decided when the state folder is first formatted):
#   TWEETPULSE_KAFKA_SASL_USERS  SCRAM-SHA-512 users created at format time, "NAME:PASSWORD ..."
#                                (whitespace-separated; no whitespace, comma, quote or backslash in a
#                                password); default: user tweetpulse with a random password, written to
#                                STATE/credentials. Later changes need a fresh state folder.
#   TWEETPULSE_KAFKA_SSL_CERT    the broker's certificate chain (PEM, leaf first), valid for 127.0.0.1
#   TWEETPULSE_KAFKA_SSL_KEY     its private key (PEM, PKCS#8, unencrypted)
#   TWEETPULSE_KAFKA_SSL_CA      the CA certificate(s) that sign it (PEM): what clients trust
#                                (the three default to a dev CA made by dev-tls.sh in STATE/tls)
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
security="$(echo "${TWEETPULSE_KAFKA_SECURITY:-plaintext}" | tr '[:upper:]' '[:lower:]')"

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

# The security of a formatted state folder: its SCRAM users live in the metadata log.
formatted_security() { cat "$state/security" 2>/dev/null || echo plaintext; }

random_secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

# sasl_ssl: TLS material, the broker's own (inter-broker) SCRAM user, and the secured listener.
configure_sasl_ssl() {
  local tls="$state/tls" cert="${TWEETPULSE_KAFKA_SSL_CERT:-}" key="${TWEETPULSE_KAFKA_SSL_KEY:-}"
  local ca="${TWEETPULSE_KAFKA_SSL_CA:-}"
  if [[ -z "$cert$key$ca" ]]; then
    bash "$here/dev-tls.sh" "$tls"
    cert="$tls/broker.pem" key="$tls/broker.key" ca="$tls/ca.pem"
  elif [[ -z "$cert" || -z "$key" || -z "$ca" ]]; then
    log "set all of TWEETPULSE_KAFKA_SSL_CERT, TWEETPULSE_KAFKA_SSL_KEY and TWEETPULSE_KAFKA_SSL_CA, or none"
    exit 1
  fi
  local f
  for f in "$cert" "$key" "$ca"; do [[ -r "$f" ]] || { log "cannot read $f"; exit 1; }; done
  mkdir -p "$tls"
  (umask 077 && cat "$key" "$cert" >"$tls/keystore.pem")  # Kafka's PEM keystore: key, then chain
  cp "$ca" "$tls/truststore.pem"
  [[ -s "$state/broker-user" ]] || (umask 077 && echo "tweetpulse-broker:$(random_secret)" >"$state/broker-user")
  local admin admin_password
  admin="$(cut -d: -f1 "$state/broker-user")" admin_password="$(cut -d: -f2- "$state/broker-user")"
  (
    umask 077  # the properties hold the broker's own password
    grep -v -E '^(listeners|advertised\.listeners|inter\.broker\.listener\.name|listener\.security\.protocol\.map)=' \
      "$props"
    sed -e "s#@PORT@#$port#g" -e "s#@CONTROLLER_PORT@#$controller_port#g" -e "s#@HOST@#$host#g" \
        -e "s#@KEYSTORE@#$tls/keystore.pem#g" -e "s#@TRUSTSTORE@#$tls/truststore.pem#g" \
        -e "s#@BROKER_USER@#$admin#g" -e "s#@BROKER_PASSWORD@#$admin_password#g" \
        "$here/sasl_ssl.properties.template"
  ) >"$props.tmp"
  chmod 600 "$props.tmp"
  mv "$props.tmp" "$props"
}

# scram: --add-scram arguments for the broker's own user and TWEETPULSE_KAFKA_SASL_USERS (or a
# generated user tweetpulse).
scram=()
scram_args() {
  local users="${TWEETPULSE_KAFKA_SASL_USERS:-}" entry name password entries=()
  if [[ -z "$users" ]]; then
    users="tweetpulse:$(random_secret)"
    (umask 077 && echo "$users" >"$state/credentials")
    log "SCRAM-SHA-512 user tweetpulse; its password is in $state/credentials"
  fi
  IFS=$' \t\n' read -r -d '' -a entries <<<"$(cat "$state/broker-user") $users" || true
  for entry in "${entries[@]}"; do
    name="${entry%%:*}" password="${entry#*:}"
    if [[ "$entry" != *:* || ! "$name" =~ ^[A-Za-z0-9._-]+$ || -z "$password" || "$password" =~ [\",\\] ]]; then
      log "TWEETPULSE_KAFKA_SASL_USERS: each entry is NAME:PASSWORD (name of letters, digits, . _ -;" \
        "password without whitespace, comma, quote or backslash)"
      exit 1
    fi
    scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=\"$password\"]")
  done
}

configure() {
  mkdir -p "$state/data" "$logdir"
  case "$security" in
    plaintext | sasl_ssl) ;;
    *) log "TWEETPULSE_KAFKA_SECURITY must be plaintext or sasl_ssl, not '$security'"; exit 1 ;;
  esac
  if [[ -f "$state/data/meta.properties" && "$(formatted_security)" != "$security" ]]; then
    log "$state was formatted for $(formatted_security), not $security: use another TWEETPULSE_KAFKA_STATE"
    exit 1
  fi
  sed -e "s#@PORT@#$port#g" -e "s#@CONTROLLER_PORT@#$controller_port#g" -e "s#@HOST@#$host#g" \
      -e "s#@LOG_DIRS@#$state/data#g" "$here/server.properties.template" > "$props"
  if [[ "$security" == sasl_ssl ]]; then
    configure_sasl_ssl
    [[ -f "$state/data/meta.properties" ]] || scram_args
  fi
  if [[ ! -f "$state/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(java_cp kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    log "formatting KRaft storage in $state/data (cluster $cluster_id)"
    java_cp -Dlog4j2.configurationFile="$here/log4j2.yaml" -Dkafka.logs.dir="$logdir" \
      kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$props" ${scram[@]+"${scram[@]}"} \
      >"$logdir/format.log" 2>&1 || { cat "$logdir/format.log" >&2; exit 1; }
    [[ "$security" == plaintext ]] || echo "$security" >"$state/security"
  fi
}

start() {
  if pid="$(running_pid)"; then log "already running (pid $pid) on $host:$port"; return 0; fi
  if port_open "$port"; then log "port $port is taken by another process"; exit 1; fi
  resolve
  configure
  log "starting Apache Kafka $version on $host:$port$([[ "$security" == sasl_ssl ]] && echo ", SASL_SSL") (state in $state)"
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
    local secured=""
    if [[ "$(formatted_security)" == sasl_ssl ]]; then
      secured=", SASL_SSL (SCRAM-SHA-512; clients trust $state/tls/truststore.pem)"
    fi
    echo "running: pid $pid, bootstrap $host:$port$secured, Apache Kafka $version, state $state, log $logdir/server.log"
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
