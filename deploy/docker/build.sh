#!/usr/bin/env bash
# Builds the TweetPulse images without any image registry: on a base made locally from Debian's
# archive (base.sh, built once and cached by its recipe's hash), with Kafka jars from Maven Central.
#   build.sh [TARGET...]    TARGETs: producer processor kafka (the default: all three), trainer
# Run from anywhere; prints each image's tag and size at the end. Environment (all optional):
#   TWEETPULSE_TAG        tag of the producer, processor and trainer images (default latest)
#   BASE_IMAGE            the base to build on (default: base.sh's; python:3.11-slim-bookworm where
#                         Docker Hub is reachable)
#   KAFKA_BASE_IMAGE      the Kafka image's base (default: BASE_IMAGE)
#   TWEETPULSE_KAFKA_VERSION, TWEETPULSE_KAFKA_CACHE   as for deploy/kafka/kafka.sh (4.1.1; the jars
#                         it resolves are reused; the Kafka image is tagged tweetpulse/kafka:VERSION)
#   TWEETPULSE_CA_BUNDLE  CA bundle that pip trusts in the build (default: PIP_CERT, SSL_CERT_FILE or
#                         the host's /etc/ssl/certs/ca-certificates.crt; for TLS-intercepting proxies)
#   TWEETPULSE_TORCH_INDEX  extra pip index for the trainer's torch (e.g. the PyTorch CPU wheels)
# Builds use host networking (pip, apt and Maven reach their registries as the host does) and need
# BuildKit: `docker buildx`, or a docker CLI older than 23 that has it built in (Debian's docker.io).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tag="${TWEETPULSE_TAG:-latest}"
kafka_version="${TWEETPULSE_KAFKA_VERSION:-4.1.1}"
kafka_cache="${TWEETPULSE_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tweetpulse}"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(producer processor kafka)

log() { echo "build: $*" >&2; }

# --- a BuildKit builder -----------------------------------------------------------------------------
builder=()
if docker buildx version >/dev/null 2>&1; then
  builder=(docker buildx build --load)
else
  for cli in $(which -a docker 2>/dev/null | awk '!seen[$0]++'); do
    major="$("$cli" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)"
    if [[ "$major" =~ ^[0-9]+$ && "$major" -lt 23 ]]; then  # 23+ build with buildx only
      builder=(env DOCKER_BUILDKIT=1 "$cli" build)
      break
    fi
  done
fi
if [[ ${#builder[@]} -eq 0 ]]; then
  log "BuildKit is needed: install the buildx plugin (docker-buildx), or Debian's docker.io (its docker CLI has BuildKit built in)"
  exit 1
fi

secret=()
ca="${TWEETPULSE_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}"
[[ -s "$ca" ]] && secret=(--secret "id=ca-bundle,src=$ca")

base="${BASE_IMAGE:-$(bash "$here/base.sh")}"
log "base image: $base"

build() {  # build TAG [docker build arguments...]
  local image="$1" started=$SECONDS
  shift
  log "building $image"
  "${builder[@]}" --network host --progress plain --tag "$image" "$@" >"$logdir/$(basename "${image%%:*}").log" 2>&1 \
    || { tail -n 40 "$logdir/$(basename "${image%%:*}").log" >&2; log "building $image failed (log: $logdir)"; exit 1; }
  log "built $image in $((SECONDS - started)) s"
  built+=("$image")
}

kafka_context() {  # the jars deploy/kafka/pom.xml resolves (kafka.sh's cache), kafka-tools, our files
  local libs="$kafka_cache/kafka-$kafka_version/libs" context="$1"
  if [[ ! -f "$libs/kafka_2.13-$kafka_version.jar" ]]; then
    command -v mvn >/dev/null || bash "$repo/deploy/system-deps.sh"
    log "resolving Apache Kafka $kafka_version from Maven Central into $libs (deploy/kafka/pom.xml)"
    mkdir -p "$libs"
    mvn -q -B -Dstyle.color=never -f "$repo/deploy/kafka/pom.xml" -Dkafka.version="$kafka_version" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" >"$logdir/mvn.log" 2>&1 \
      || { cat "$logdir/mvn.log" >&2; exit 1; }
  fi
  mkdir -p "$context/libs"
  cp "$here"/kafka/* "$context/"
  cp "$libs"/*.jar "$context/libs/"
  # The command-line tools (the health check's kafka-broker-api-versions.sh), same version.
  (cd "$context" && mvn -q -B -Dstyle.color=never dependency:copy \
    -Dartifact="org.apache.kafka:kafka-tools:$kafka_version" -DoutputDirectory="$context/libs") \
    >"$logdir/mvn.log" 2>&1 || { cat "$logdir/mvn.log" >&2; exit 1; }
}

logdir="$(mktemp -d "${TMPDIR:-/tmp}/tweetpulse-build.XXXXXX")"
built=()
for target in "${targets[@]}"; do
  case "$target" in
    producer | processor | processor-gpu)
      build "tweetpulse/$target:$tag" -f "$here/Dockerfile" --target "$target" \
        --build-arg BASE_IMAGE="$base" "${secret[@]}" "$repo"
      ;;
    trainer)
      build "tweetpulse/trainer:$tag" -f "$here/Dockerfile" --target trainer \
        --build-arg BASE_IMAGE="$base" --build-arg PIP_EXTRA_INDEX_URL="${TWEETPULSE_TORCH_INDEX:-}" \
        "${secret[@]}" "$repo"
      ;;
    kafka)
      context="$logdir/kafka-context"
      kafka_context "$context"
      build "tweetpulse/kafka:$kafka_version" -f "$here/Dockerfile.kafka" \
        --build-arg BASE_IMAGE="${KAFKA_BASE_IMAGE:-$base}" "$context"
      rm -rf "$context"
      ;;
    *) log "unknown target $target (producer, processor, processor-gpu, trainer, kafka)"; exit 2 ;;
  esac
done
# A rebuild leaves the previous image untagged: drop those of ours (label io.tweetpulse.image), and keep
# the build cache (layers, pip's downloads) under TWEETPULSE_BUILD_CACHE_KEEP (default 4GB).
docker image prune -f --filter label=io.tweetpulse.image >/dev/null
docker builder prune -f --keep-storage "${TWEETPULSE_BUILD_CACHE_KEEP:-4GB}" >/dev/null 2>&1 || true
for image in "${built[@]}"; do
  docker image inspect -f '{{.Size}}' "$image" | awk -v image="$image" '{printf "%s %.0f MB\n", image, $1 / 1e6}'
done
rm -rf "$logdir"
