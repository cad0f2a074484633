#!/usr/bin/env bash
# TweetPulse's own Kafka image: configured the way the apache/kafka image is, from the environment.
#   KAFKA_FOO_BAR=x   -> foo.bar=x      KAFKA_FOO__BAR=x -> foo_bar=x      KAFKA_FOO___BAR=x -> foo-bar=x
#   CLUSTER_ID        the KRaft cluster id the storage is formatted with (default: a random one)
#   KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS: JVM options (not broker properties)
# With no KAFKA_* property at all, config/server.defaults.properties (a single node on :9092) is used.
# The storage (log.dirs) is formatted on the first start only.
set -euo pipefail

home=/opt/kafka
props="${KAFKA_CONFIG_DIR:-/tmp/kafka-config}/server.properties"
jvm_only=" KAFKA_HEAP_OPTS KAFKA_JVM_PERFORMANCE_OPTS KAFKA_OPTS KAFKA_LOG4J_OPTS KAFKA_GC_LOG_OPTS KAFKA_JMX_OPTS KAFKA_DEBUG KAFKA_CONFIG_DIR "

mkdir -p "$(dirname "$props")"
: >"$props"
for var in $(compgen -e); do
  [[ $var == KAFKA_* && $jvm_only != *" $var "* ]] || continue
  name="${var#KAFKA_}"
  name="${name,,}"
  name="${name//___/-}"
  name="${name//__/$'\001'}"
  name="${name//_/.}"
  name="${name//$'\001'/_}"
  printf '%s=%s\n' "$name" "${!var}" >>"$props"
done
[[ -s "$props" ]] || cp "$home/config/server.defaults.properties" "$props"

property() { sed -n "s/^$1=//p" "$props" | tail -n 1; }
classpath="$home/libs/*"
log4j="-Dlog4j2.configurationFile=$home/config/log4j2.yaml"

data="$(property log.dirs | cut -d, -f1)"
data="${data:-$(property log.dir)}"
data="${data:-/tmp/kafka-logs}"
if [[ ! -f "$data/meta.properties" ]]; then
  cluster_id="${CLUSTER_ID:-$(java -cp "$classpath" $log4j kafka.tools.StorageTool random-uuid | tail -n 1)}"
  mode=()
  if [[ "$(property process.roles)" == *controller* && -z "$(property controller.quorum.voters)" ]]; then
    mode=(--standalone)
  fi
  echo "kafka: formatting $data for cluster $cluster_id" >&2
  java -cp "$classpath" $log4j kafka.tools.StorageTool format --ignore-formatted "${mode[@]}" \
    -t "$cluster_id" -c "$props"
fi

# shellcheck disable=SC2086  # the option variables hold several words on purpose
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError} \
  -Djava.awt.headless=true $log4j ${KAFKA_OPTS:-} -cp "$classpath" kafka.Kafka "$props"
