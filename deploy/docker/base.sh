#!/usr/bin/env bash
# A Debian bookworm base image made locally, for hosts that cannot pull python:3.11-slim-bookworm
# (no image registry reachable): debootstrap from Debian's package archive, the one apt uses, then
# `docker import`. It is what the Dockerfile needs of its base: python (3.11), venv, CA certificates.
#   base.sh            prints the tag of the image, building it first if it is not there yet
# The tag is a hash of this script (the package list and every step are in it): an edit rebuilds,
# a rerun reuses. Environment (optional): TWEETPULSE_DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Needs root (debootstrap), the `debootstrap` package (installed here on Debian when missing) and a
# Docker engine.
set -euo pipefail

suite=bookworm
packages=python3,python3-venv,python-is-python3,ca-certificates
mirror="${TWEETPULSE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
repo=tweetpulse/base
self="${BASH_SOURCE[0]}"
tag="$repo:$suite-$(cat "$self" | sha256sum | cut -c1-12)"

log() { echo "base: $*" >&2; }

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  log "building $tag needs root (debootstrap); run as root or give BASE_IMAGE to the build"; exit 1
fi
if ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || { log "debootstrap is missing and there is no apt-get to install it"; exit 1; }
  log "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

root="$(mktemp -d "${TMPDIR:-/tmp}/tweetpulse-base.XXXXXX")"
trap 'rm -rf "$root"' EXIT
started=$SECONDS
log "debootstrap $suite (minbase + $packages) from $mirror into $root"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# What Debian's own container images do: no docs, no recommends, no caches in the image.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
cat >"$root/etc/apt/apt.conf.d/docker-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
  "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/root/.cache
: >"$root/etc/machine-id"

tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase --include=$packages $suite" \
  - "$tag" >/dev/null
docker tag "$tag" "$repo:$suite"
log "built $tag in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$tag"
