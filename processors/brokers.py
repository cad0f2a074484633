"""settings.kafka mapped to aiokafka client options (the worker's model watch, processors/models.py).

The worker's consumers and producer are confluent-kafka's and take ``KafkaSettings.confluent_config()``
as is. :func:`client_spec` reads that same config into a :class:`ClientSpec` for the aiokafka client
and the login check, so the two libraries connect alike. Each librdkafka key is either

- honoured: in :data:`HONOURED` (bootstrap servers, protocol, client id, SASL PLAIN/SCRAM, the TLS
  trust, client certificate, host name check, certificate verification, ciphers and CRL);
- refused with a one-line :class:`SettingsError`: any other key about where or how securely to
  connect (``security.*``, ``sasl.*``, ``ssl.*``, ``https.*``...), or a value aiokafka cannot honour
  (an OAUTHBEARER or GSSAPI login, a PKCS#12 keystore, a PEM key given inline), so it never connects
  less securely, or elsewhere, than the librdkafka clients with the same settings;
- or librdkafka client tuning (``message.timeout.ms``, ``debug``...): ``not_applied`` to the aiokafka
  client (the confluent clients take it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tweetpulse.settings import KafkaSettings, SettingsError

log = logging.getLogger(__name__)

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")  # what aiokafka does with a password
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")

# librdkafka keys the processor honours (aiokafka's equivalent in the comment).
HONOURED = frozenset(
    {
        "bootstrap.servers",  # bootstrap_servers, and Faust's broker URLs
        "security.protocol",  # security_protocol
        "client.id",  # client_id
        "sasl.mechanism",  # sasl_mechanism
        "sasl.mechanisms",  # librdkafka's alias of sasl.mechanism
        "sasl.username",  # sasl_plain_username
        "sasl.password",  # sasl_plain_password
        "ssl.ca.location",  # the SSLContext's cafile (a file) or capath (a folder); "probe": system CAs
        "ssl.ca.pem",  # cadata
        "ssl.certificate.location",  # load_cert_chain(certfile)
        "ssl.key.location",  # load_cert_chain(keyfile)
        "ssl.key.password",  # load_cert_chain(password)
        "ssl.endpoint.identification.algorithm",  # check_hostname: https -> True, none -> False
        "enable.ssl.certificate.verification",  # verify_mode CERT_NONE when false
        "ssl.cipher.suites",  # set_ciphers (both take an OpenSSL cipher list)
        "ssl.crl.location",  # load_verify_locations + VERIFY_CRL_CHECK_LEAF
    }
)
# Keys about where or how securely to connect: never left out silently.
CONNECTION_PREFIXES = ("security.", "sasl.", "ssl.", "ssl_", "https.", "enable.ssl.", "enable.sasl.")
CONNECTION_KEYS = frozenset({"bootstrap.servers", "metadata.broker.list", "client.id"})
# Refused keys whose reason is worth more than "no equivalent".
REFUSED_WHY = {
    "metadata.broker.list": "set kafka.bootstrap_servers instead",
    "ssl.certificate.pem": "put the certificate in a file: kafka.ssl_certificate_location",
    "ssl.key.pem": "put the key in a file: kafka.ssl_key_location",
    "ssl.keystore.location": "PKCS#12 keystores are not supported; give kafka.ssl_certificate_location "
    "and kafka.ssl_key_location (PEM)",
}
LOGIN_TIMEOUT_S = 20.0  # per bootstrap server, for the login check before the worker starts


def is_connection_key(key: str) -> bool:
    """Whether a librdkafka key is about where or how securely to connect (never dropped silently)."""
    key = key.lower()
    return key in CONNECTION_KEYS or key.startswith(CONNECTION_PREFIXES)


@dataclass(frozen=True)
class TlsSpec:
    """The TLS side of a connection, as librdkafka's ``ssl.*`` settings describe it."""

    cafile: str | None = None
    capath: str | None = None
    cadata: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True  # librdkafka's default: ssl.endpoint.identification.algorithm=https
    verify: bool = True
    ciphers: str | None = None
    crlfile: str | None = None

    def context(self) -> ssl.SSLContext:
        """An SSLContext that trusts, presents and checks what librdkafka would."""
        step = f"ssl.ca.location {self.cafile or self.capath}" if self.cafile or self.capath else "ssl.ca.pem"
        try:
            ctx = ssl.create_default_context(cafile=self.cafile, capath=self.capath, cadata=self.cadata)
            if self.certfile:
                step = f"ssl.certificate.location {self.certfile} / ssl.key.location {self.keyfile}"
                ctx.load_cert_chain(self.certfile, self.keyfile, self.key_password)
            if self.crlfile:
                step = f"ssl.crl.location {self.crlfile}"
                ctx.load_verify_locations(self.crlfile)
                ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            if self.ciphers:
                step = f"ssl.cipher.suites {self.ciphers!r}"
                ctx.set_ciphers(self.ciphers)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SettingsError(f"kafka {step}: {' '.join(problem.split()) or type(exc).__name__}") from None
        ctx.check_hostname = self.verify and self.check_hostname
        if not self.verify:
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


@dataclass(frozen=True)
class ClientSpec:
    """How to connect, in terms both Faust and aiokafka take; built by :func:`client_spec` only."""

    bootstrap_servers: tuple[str, ...]
    security_protocol: str
    client_id: str
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    tls: TlsSpec | None = None
    not_applied: tuple[str, ...] = ()  # librdkafka tuning keys the aiokafka client does not take

    def hosts(self) -> list[tuple[str, int]]:
        out = []
        for server in self.bootstrap_servers:
            host, _, port = server.rpartition(":")
            out.append((host.strip("[]") or server, int(port) if port.isdigit() else 9092))
        return out


def client_spec(kafka: KafkaSettings) -> ClientSpec:
    """The connection of ``kafka.confluent_config()``, or SettingsError (one line) for a setting the
    Faust processor cannot honour."""
    conf = {key.lower(): value for key, value in kafka.confluent_config().items()}
    refused = [key for key in conf if key not in HONOURED and is_connection_key(key)]
    if refused:
        key = sorted(refused)[0]
        why = REFUSED_WHY.get(key, "it has no equivalent in the Faust processor (aiokafka)")
        raise SettingsError(f"kafka setting {key!r} cannot be honoured by the Faust processor: {why}")
    protocol = str(conf["security.protocol"]).upper()
    if protocol not in PROTOCOLS:
        raise SettingsError(f"kafka security.protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    servers = tuple(s.strip() for s in str(conf["bootstrap.servers"]).split(",") if s.strip())
    if not servers:
        raise SettingsError("kafka.bootstrap_servers names no server")
    mechanism, username, password = None, None, None
    if protocol.startswith("SASL"):
        mechanism = str(conf.get("sasl.mechanism", conf.get("sasl.mechanisms", "GSSAPI"))).upper()
        if mechanism not in SASL_MECHANISMS:
            raise SettingsError(
                f"kafka sasl.mechanism {mechanism} is not supported by the Faust processor "
                f"(it logs in with {', '.join(SASL_MECHANISMS)})"
            )
        username, password = conf.get("sasl.username"), conf.get("sasl.password")
        if not username or not password:
            raise SettingsError("kafka.sasl_username and kafka.sasl_password are required for SASL")
    tls = _tls_spec(conf) if protocol.endswith("SSL") else None
    return ClientSpec(
        bootstrap_servers=servers,
        security_protocol=protocol,
        client_id=str(conf["client.id"]),
        sasl_mechanism=mechanism,
        sasl_username=str(username) if username else None,
        sasl_password=str(password) if password else None,
        tls=tls,
        not_applied=tuple(sorted(key for key in conf if not is_connection_key(key))),
    )


def _flag(conf: dict[str, Any], key: str, default: bool) -> bool:
    value = conf.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off"}:
        return False
    raise SettingsError(f"kafka setting {key!r}: {value!r} is not true or false")


def _tls_spec(conf: dict[str, Any]) -> TlsSpec:
    algorithm = str(conf.get("ssl.endpoint.identification.algorithm", "https")).strip().lower()
    if algorithm not in {"https", "none"}:
        raise SettingsError(
            f"kafka setting 'ssl.endpoint.identification.algorithm': {algorithm!r} is not https or none"
        )
    location = conf.get("ssl.ca.location")
    cafile = capath = None
    if location is not None and str(location) != "probe":  # probe: the system's CAs, as by default
        path = Path(str(location))
        cafile, capath = (None, str(path)) if path.is_dir() else (str(path), None)
    text = lambda key: str(conf[key]) if conf.get(key) not in (None, "") else None  # noqa: E731
    return TlsSpec(
        cafile=cafile,
        capath=capath,
        cadata=text("ssl.ca.pem"),
        certfile=text("ssl.certificate.location"),
        keyfile=text("ssl.key.location"),
        key_password=text("ssl.key.password"),
        check_hostname=algorithm == "https",
        verify=_flag(conf, "enable.ssl.certificate.verification", True),
        ciphers=text("ssl.cipher.suites"),
        crlfile=text("ssl.crl.location"),
    )


def aiokafka_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (the model watch) with the confluent clients' connection."""
    return _aiokafka_options(client_spec(kafka))


def _aiokafka_options(spec: ClientSpec) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": ",".join(spec.bootstrap_servers),
        "security_protocol": spec.security_protocol,
        "client_id": spec.client_id,
    }
    if spec.sasl_mechanism:
        options["sasl_mechanism"] = spec.sasl_mechanism
        options["sasl_plain_username"] = spec.sasl_username
        options["sasl_plain_password"] = spec.sasl_password
    context = spec.tls.context() if spec.tls is not None else None
    if context is not None:
        options["ssl_context"] = context
    return options


def verify_login(spec: ClientSpec, timeout: float = LOGIN_TIMEOUT_S) -> None:
    """Connect to the bootstrap servers as aiokafka will (TLS handshake, SASL login) and return at
    the first that accepts. A refused login or certificate raises SettingsError (one line, no secret);
    servers that cannot be reached are left to the caller's own retries."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-login") as pool:
        pool.submit(asyncio.run, _login(spec, timeout)).result()  # its own loop: Faust's is not made yet


async def _login(spec: ClientSpec, timeout: float) -> None:
    from aiokafka import conn, errors  # Faust's client (~0.1 s to import): only a worker logs in

    # The broker refused who we are or how we log in: not a transient failure.
    refusals = (
        errors.SaslAuthenticationFailed,
        errors.AuthenticationFailedError,
        errors.AuthenticationMethodNotSupported,
    )

    options = _aiokafka_options(spec)
    options.pop("bootstrap_servers")
    for host, port in spec.hosts():
        where = f"{host}:{port}"
        try:
            connection = await asyncio.wait_for(
                conn.create_conn(host, port, request_timeout_ms=int(timeout * 1000), **options), timeout
            )
        except ssl.SSLCertVerificationError as exc:
            raise SettingsError(
                f"kafka: the TLS certificate of {where} is not trusted ({exc.verify_message}); "
                "check kafka.ssl_ca_location"
            ) from None
        except refusals as exc:
            message = " ".join(str(exc).split())
            raise SettingsError(
                f"kafka: {where} refused the SASL login of user {spec.sasl_username!r} "
                f"({spec.sasl_mechanism}): {message}"
            ) from None
        except errors.UnsupportedSaslMechanismError as exc:
            message = " ".join(str(exc).split())
            raise SettingsError(
                f"kafka: {where} does not offer SASL mechanism {spec.sasl_mechanism}: {message}"
            ) from None
        except errors.IllegalSaslStateError:
            raise SettingsError(
                f"kafka: {where} does not take a SASL login: check kafka.security_protocol "
                f"({spec.security_protocol}) against the broker's listener"
            ) from None
        except errors.KafkaError as exc:
            log.warning("kafka login check: server not usable", extra={"server": where, "error": str(exc)})
            continue
        except (TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("kafka login check: server not reachable", extra={"server": where, "error": reason})
            continue
        connection.close()
        return
