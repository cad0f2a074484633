#!/usr/bin/env bash
# Installs the system packages TweetPulse needs from Debian's apt, only those missing.
#   system-deps.sh            Java 17 and Maven (the local Kafka broker)
#   system-deps.sh --tests    also Chromium (the dashboard's browser test)
set -euo pipefail
need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
if [[ "${1:-}" == "--tests" ]]; then
  command -v chromium >/dev/null || need+=(chromium)
fi
[[ ${#need[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "system-deps: please install with your package manager: ${need[*]}" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
