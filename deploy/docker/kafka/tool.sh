#!/usr/bin/env bash
# The few Kafka command-line tools this image ships, named as in the apache/kafka image
# (/opt/kafka/bin/NAME.sh): one script, linked under each name, that runs the tool's class.
set -euo pipefail
case "$(basename "$0")" in
  kafka-broker-api-versions.sh) class=org.apache.kafka.tools.BrokerApiVersionsCommand ;;
  kafka-topics.sh) class=org.apache.kafka.tools.TopicCommand ;;
  kafka-consumer-groups.sh) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  kafka-storage.sh) class=kafka.tools.StorageTool ;;
  *) echo "$(basename "$0"): not a tool of this image" >&2; exit 2 ;;
esac
# A small, quickly started JVM: these run as health checks, every few seconds.
exec java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto \
  -Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.yaml -cp "/opt/kafka/libs/*" "$class" "$@"
