#!/usr/bin/env bash
# A development CA and a broker certificate signed by it, for the local SASL_SSL broker (kafka.sh).
#   dev-tls.sh DIR
# Writes DIR/ca.pem (what clients trust: TWEETPULSE_KAFKA__SSL_CA_LOCATION), DIR/ca.key, and
# DIR/broker.pem + DIR/broker.key (PKCS#8, unencrypted) for subjectAltName IP:127.0.0.1 and
# DNS:localhost, so clients verify the broker's host name as they would in production.
# Existing files are kept: delete DIR to get new ones. Needs the openssl command.
set -euo pipefail

dir="${1:?usage: dev-tls.sh DIR}"
days="${TWEETPULSE_KAFKA_TLS_DAYS:-825}"
command -v openssl >/dev/null || { echo "kafka: the openssl command is needed to make the dev CA" >&2; exit 1; }
mkdir -p "$dir"
umask 077

if [[ ! -f "$dir/ca.pem" || ! -f "$dir/ca.key" ]]; then
  openssl req -x509 -new -newkey rsa:2048 -noenc -sha256 -days "$days" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "/CN=TweetPulse local Kafka dev CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  rm -f "$dir/broker.pem" "$dir/broker.key"  # a new CA: the old broker certificate is not signed by it
fi

if [[ ! -f "$dir/broker.pem" || ! -f "$dir/broker.key" ]]; then
  ext="$(mktemp)"
  trap 'rm -f "$ext" "$dir/broker.csr"' EXIT
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$ext"
  openssl req -new -newkey rsa:2048 -noenc -sha256 -keyout "$dir/broker.key" -out "$dir/broker.csr" \
    -subj "/CN=127.0.0.1" 2>/dev/null
  openssl x509 -req -sha256 -days "$days" -in "$dir/broker.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$ext" -out "$dir/broker.pem" 2>/dev/null
fi
chmod 644 "$dir/ca.pem" "$dir/broker.pem"
