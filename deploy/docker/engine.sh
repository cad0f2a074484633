#!/usr/bin/env bash
# Makes sure a Docker engine answers, starting (and on Debian, installing) one where it can.
#   engine.sh      exit 0: `docker info` works (the engine was there, or was started here)
#                  exit 3: no engine can be had on this host; the reason is on stderr
# As root on Debian: installs the `docker.io` package when dockerd is missing, then starts the engine
# (systemd when it runs the machine, else dockerd in the background, logging to
# ~/.local/state/tweetpulse/dockerd.log). Elsewhere it only says what is missing.
set -euo pipefail

state="${XDG_STATE_HOME:-$HOME/.local/state}/tweetpulse"
log() { echo "engine: $*" >&2; }
missing() { log "$*"; exit 3; }
answers() { command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; }

answers && exit 0
root=0; [[ $(id -u) -eq 0 ]] && root=1

if ! command -v dockerd >/dev/null; then
  if [[ $root = 0 ]]; then
    missing "no Docker engine answers and none is installed: install Docker (Debian: apt-get install docker.io) and start it, or run this as root"
  fi
  command -v apt-get >/dev/null || missing "no Docker engine answers and there is no apt-get to install one: install Docker"
  log "installing Debian's docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null \
    || missing "apt-get install docker.io failed"
  answers && exit 0  # its postinst may have started it
fi

[[ $root = 1 ]] || missing "dockerd is installed but no engine answers, and starting it needs root: start the docker service, or add this user to the docker group"

if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
  log "starting the docker service"
  systemctl start docker || true
else
  mkdir -p "$state"
  log "starting dockerd in the background (log: $state/dockerd.log)"
  setsid nohup dockerd >>"$state/dockerd.log" 2>&1 </dev/null &
  echo $! >"$state/dockerd.pid"
fi
for _ in $(seq 1 60); do
  answers && { log "ready"; exit 0; }
  sleep 1
done
tail -n 20 "$state/dockerd.log" >&2 2>/dev/null || true
missing "the Docker engine did not answer within 60 s of starting it (not permitted here? a container without privileges cannot run one)"
