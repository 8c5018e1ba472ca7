"""Self-managed serving certificates for webhooks: a CA and a serving certificate kept in one Secret, the CA
bundle published into webhook configurations, rotation long before expiry, and every replica agreeing.

The Secret (type kubernetes.io/tls) holds:
- `tls.crt` / `tls.key`: the certificate every replica serves;
- `ca.crt`: the CA bundle (every CA still trusted, oldest first), which is what goes into `caBundle`;
- `tls-next.crt` / `tls-next.key` and the annotation `<prefix>/rotation-started-at`: during a rotation, the
  next certificate, signed by a new CA, not yet served.

A rotation (design.md §webhook-tls) never fails a request: a new CA and certificate are made and the new CA is
added to the bundle; the bundle (old and new CA) is published; only after this replica has seen the new CA in
every webhook configuration for `promote_delay` (so API servers had time to pick it up) does the new
certificate become the served one. The old CA stays in the bundle until it expires, so a replica still serving
the old certificate for a poll interval keeps working.

Replicas agree by optimistic concurrency: each one reads the Secret, decides with the pure `plan` function,
and writes with the resourceVersion it read (create for the first one); losers get a conflict, read again, and
find nothing left to do. Every replica publishes the bundle it read, but never removes a CA newer than the
newest it knows (that one comes from a newer Secret than this replica has seen), and writes the served
certificate into its certificate directory, where the webhook server's reloader picks it up.

Nothing here knows about OJS; the names of the Secret, the webhook configurations and the annotation prefix
come from the caller.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import os
import random
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ojsctrl.runtime.client import (
    JSON,
    SECRETS,
    AlreadyExistsError,
    ApiError,
    Client,
    ConflictError,
    NotFoundError,
    Resource,
)

log = structlog.get_logger("ojsctrl.certs")

VALIDATING_WEBHOOK_CONFIGURATIONS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    namespaced=False,
)
CERT_KEY, KEY_KEY, CA_KEY = "tls.crt", "tls.key", "ca.crt"
NEXT_CERT_KEY, NEXT_KEY_KEY = "tls-next.crt", "tls-next.key"
# notBefore is backdated so that a clock a little behind ours still accepts a fresh certificate.
BACKDATE = dt.timedelta(minutes=5)
# Bundles stay small: at most this many CAs (the served certificate's issuer is always kept).
MAX_CAS = 4

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _clamp(value: dt.timedelta, low: dt.timedelta, high: dt.timedelta) -> dt.timedelta:
    return max(low, min(high, value))


@dataclass(frozen=True)
class CertConfig:
    """What to issue and where it lives."""

    namespace: str
    secret_name: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...] = ("127.0.0.1",)
    validity: dt.timedelta = dt.timedelta(days=365)
    webhook_configs: tuple[str, ...] = ()
    ca_name: str = "ojsctrl-webhook-ca"
    annotation_prefix: str = "ojsctrl.certs"
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def renew_before(self) -> dt.timedelta:
        """Rotation starts when a third of the certificate's life is left."""
        return self.validity / 3

    @property
    def promote_delay(self) -> dt.timedelta:
        """How long the new CA must have been seen published before its certificate is served."""
        return _clamp(self.validity / 10, dt.timedelta(seconds=1), dt.timedelta(seconds=60))

    @property
    def poll_interval(self) -> dt.timedelta:
        """How often each replica reads the Secret (much less than the time between promotion and expiry)."""
        return _clamp(self.validity / 30, dt.timedelta(seconds=1), dt.timedelta(seconds=60))

    @property
    def rotation_annotation(self) -> str:
        return f"{self.annotation_prefix}/rotation-started-at"


# --------------------------------------------------------------------------- material
def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Pair:
    """A certificate with its private key (PEM) and the parsed certificate."""

    cert_pem: bytes
    key_pem: bytes
    cert: x509.Certificate = field(compare=False, repr=False)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> Pair:
        """Parse and check that the key belongs to the certificate; raises ValueError otherwise."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        public = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if (
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            != public
        ):
            raise ValueError("private key does not match the certificate")
        return cls(cert_pem, key_pem, cert)

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.cert)

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    def sans(self) -> tuple[set[str], set[str]]:
        """(DNS names, IP addresses) of the certificate."""
        try:
            ext = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return set(), set()
        return set(ext.get_values_for_type(x509.DNSName)), {
            str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
        }


@dataclass(frozen=True)
class CertState:
    """The certificates as the Secret holds them."""

    cas: tuple[x509.Certificate, ...]
    serving: Pair | None
    pending: Pair | None = None
    pending_since: dt.datetime | None = None

    def bundle_pem(self) -> bytes:
        return b"".join(_pem(ca) for ca in self.cas)

    def issuer_of(self, pair: Pair) -> x509.Certificate | None:
        for ca in self.cas:
            try:
                pair.cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return ca
        return None


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue(
    cfg: CertConfig, now: dt.datetime, extra_dns: Iterable[str] = (), extra_ips: Iterable[str] = ()
) -> tuple[x509.Certificate, Pair]:
    """A new CA and a serving certificate it signed, both valid from now for `cfg.validity`."""
    not_before, not_after = now - BACKDATE, now + cfg.validity
    ca_key = _ec_key()
    # A distinct subject per CA: old and new CA sit side by side in one bundle.
    ca_subject = x509.Name(
        [
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"{cfg.ca_name}@{int(now.timestamp())}-{secrets.token_hex(3)}"
            )
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    dns = list(dict.fromkeys([*cfg.dns_names, *extra_dns]))[:32]
    ips = list(dict.fromkeys([*cfg.ip_addresses, *extra_ips]))[:8]
    key = _ec_key()
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0] if dns else "webhook")]))
        .issuer_name(ca_subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca, Pair(_pem(leaf), _key_pem(key), leaf)


# --------------------------------------------------------------------------- the decision (pure)
class Action(StrEnum):
    """What `plan` decided."""

    NONE = "none"
    FRESH = "fresh"  # nothing usable: new CA and certificate, served at once
    ROTATE = "rotate"  # new CA in the bundle and a pending certificate
    PROMOTE = "promote"  # the pending certificate becomes the served one
    PRUNE = "prune"  # expired CAs leave the bundle


@dataclass(frozen=True)
class Plan:
    """The decision and the state to write (the current one for NONE)."""

    action: Action
    state: CertState
    reason: str = ""


def _valid_at(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def pair_problem(pair: Pair | None, state: CertState, now: dt.datetime) -> str | None:
    """Why this certificate cannot be served now (None when it can)."""
    if pair is None:
        return "missing or unreadable"
    if now >= pair.not_after:
        return "expired"
    ca = state.issuer_of(pair)
    if ca is None:
        return "not signed by a CA in the bundle"
    if now >= ca.not_valid_after_utc:
        return "its CA expired"
    return None


def _missing_sans(pair: Pair, cfg: CertConfig) -> list[str]:
    dns, ips = pair.sans()
    return [d for d in cfg.dns_names if d not in dns] + [i for i in cfg.ip_addresses if i not in ips]


def _keep_cas(
    cas: Iterable[x509.Certificate],
    now: dt.datetime,
    keep: Iterable[x509.Certificate | None] = (),
    limit: int = MAX_CAS,
) -> list[x509.Certificate]:
    """The CAs still worth trusting: unexpired ones and those in `keep`, at most `limit` (oldest go first)."""
    must = {_fingerprint(c) for c in keep if c is not None}
    out = [c for c in cas if now < c.not_valid_after_utc or _fingerprint(c) in must]
    while len(out) > limit:
        victim = next((c for c in out if _fingerprint(c) not in must), None)
        if victim is None:
            break
        out.remove(victim)
    return out


def plan(
    current: CertState | None,
    cfg: CertConfig,
    now: dt.datetime,
    *,
    published_at: dt.datetime | None = None,
) -> Plan:
    """Decide the next state of the certificates.

    `published_at` is when this replica first saw the pending certificate's CA in every webhook
    configuration (None: not seen there yet).
    """
    cas = tuple(current.cas) if current else ()
    serving = current.serving if current else None
    state = current or CertState(cas=(), serving=None)
    problem = pair_problem(serving, state, now)
    if problem is not None or serving is None:
        # Nothing trustworthy is served, so there is nothing a staged rotation could protect.
        ca, pair = issue(cfg, now)
        kept = _keep_cas([c for c in cas if _valid_at(c, now)], now, limit=MAX_CAS - 1)
        return Plan(Action.FRESH, CertState(cas=(*kept, ca), serving=pair), f"serving certificate {problem}")

    pending = state.pending
    if pending is not None:
        pending_problem = pair_problem(pending, state, now)
        if pending_problem is None and state.pending_since is None:
            pending_problem = "has no rotation start time"
        if pending_problem is None and _missing_sans(pending, cfg):
            pending_problem = "lacks wanted names"
        if pending_problem is None:
            since = state.pending_since or now
            if published_at is not None and now >= max(since, published_at) + cfg.promote_delay:
                return _promote(state, now, "new CA published")
            if now >= serving.not_after - cfg.promote_delay:
                return _promote(state, now, "served certificate about to expire")
            return Plan(Action.NONE, state, "waiting for the new CA to be published")
        return _rotate(state, cfg, now, serving, f"pending certificate {pending_problem}")

    missing = _missing_sans(serving, cfg)
    if missing:
        return _rotate(state, cfg, now, serving, f"serving certificate lacks {', '.join(missing)}")
    if now >= serving.not_after - cfg.renew_before:
        return _rotate(state, cfg, now, serving, "serving certificate due for renewal")
    if serving.not_after - now > cfg.validity + max(dt.timedelta(seconds=1), cfg.validity / 10):
        return _rotate(state, cfg, now, serving, "serving certificate outlives the configured validity")

    kept = _keep_cas(cas, now, [state.issuer_of(serving)])
    if len(kept) < len(cas):
        return Plan(Action.PRUNE, replace(state, cas=tuple(kept)), "expired CAs removed from the bundle")
    return Plan(Action.NONE, state)


def _rotate(state: CertState, cfg: CertConfig, now: dt.datetime, serving: Pair, reason: str) -> Plan:
    dns, ips = serving.sans()
    # Names only grow across rotations, so replicas configured differently (a rolling update that renames the
    # Service) do not take turns rotating each other's names away.
    ca, pair = issue(cfg, now, sorted(dns), sorted(ips))
    kept = _keep_cas(state.cas, now, [state.issuer_of(serving)], limit=MAX_CAS - 1)
    return Plan(
        Action.ROTATE,
        CertState(cas=(*kept, ca), serving=serving, pending=pair, pending_since=now),
        reason,
    )


def _promote(state: CertState, now: dt.datetime, reason: str) -> Plan:
    assert state.pending is not None
    # The previous CA stays until it expires: replicas still serving its certificate keep working.
    kept = _keep_cas(state.cas, now, [state.issuer_of(state.pending)])
    return Plan(Action.PROMOTE, CertState(cas=tuple(kept), serving=state.pending), reason)


# --------------------------------------------------------------------------- the Secret
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""


def load_cas(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (unparsable bundles give an empty list)."""
    try:
        return list(x509.load_pem_x509_certificates(pem)) if pem.strip() else []
    except ValueError:
        return []


def decode_secret(secret: Mapping[str, Any], cfg: CertConfig) -> CertState:
    """The state a Secret holds; whatever is unreadable counts as absent."""
    data = secret.get("data") or {}
    annotations = (secret.get("metadata") or {}).get("annotations") or {}

    def pair(cert_key: str, key_key: str) -> Pair | None:
        try:
            return Pair.load(_unb64(data.get(cert_key)), _unb64(data.get(key_key)))
        except (ValueError, TypeError):
            return None

    since: dt.datetime | None = None
    raw_since = annotations.get(cfg.rotation_annotation)
    if isinstance(raw_since, str):
        with contextlib.suppress(ValueError):
            since = dt.datetime.fromisoformat(raw_since.replace("Z", "+00:00"))
            if since.tzinfo is None:
                since = since.replace(tzinfo=dt.UTC)
    pending = pair(NEXT_CERT_KEY, NEXT_KEY_KEY)
    return CertState(
        cas=tuple(load_cas(_unb64(data.get(CA_KEY)))),
        serving=pair(CERT_KEY, KEY_KEY),
        pending=pending,
        pending_since=since if pending is not None else None,
    )


def encode_secret(state: CertState, cfg: CertConfig, existing: Mapping[str, Any] | None = None) -> JSON:
    """The Secret for a state: an update of `existing` (its resourceVersion, other keys and metadata kept)."""
    meta: JSON = dict((existing or {}).get("metadata") or {})
    meta.pop("managedFields", None)
    meta.update({"name": cfg.secret_name, "namespace": cfg.namespace})
    meta["labels"] = {**(meta.get("labels") or {}), **cfg.labels}
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(cfg.rotation_annotation, None)
    data: JSON = dict((existing or {}).get("data") or {})
    for key in (NEXT_CERT_KEY, NEXT_KEY_KEY):
        data.pop(key, None)
    assert state.serving is not None
    data.update(
        {
            CERT_KEY: _b64(state.serving.cert_pem),
            KEY_KEY: _b64(state.serving.key_pem),
            CA_KEY: _b64(state.bundle_pem()),
        }
    )
    if state.pending is not None and state.pending_since is not None:
        data[NEXT_CERT_KEY] = _b64(state.pending.cert_pem)
        data[NEXT_KEY_KEY] = _b64(state.pending.key_pem)
        annotations[cfg.rotation_annotation] = state.pending_since.astimezone(dt.UTC).isoformat()
    meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": (existing or {}).get("type") or "kubernetes.io/tls",
        "metadata": meta,
        "data": data,
    }


def merge_bundle(
    ours: list[x509.Certificate], published: list[x509.Certificate], now: dt.datetime
) -> list[x509.Certificate]:
    """The bundle to publish: ours, plus any published CA newer than all of ours (it comes from a Secret
    newer than the one this replica read, and removing it could break a promotion in progress)."""
    if not ours:
        return list(published)
    newest = max(c.not_valid_before_utc for c in ours)
    known = {_fingerprint(c) for c in ours}
    extra = [
        c
        for c in published
        if _fingerprint(c) not in known and c.not_valid_before_utc > newest and now < c.not_valid_after_utc
    ]
    return [*ours, *extra]


# --------------------------------------------------------------------------- the replica's loop
class SelfManagedCertificates:
    """Runs on every replica: keeps the Secret current, publishes its CA bundle, and writes the served
    certificate into `cert_dir` (`tls.crt`, `tls.key`), calling `on_change` after a new one is written."""

    def __init__(
        self,
        client: Client,
        cfg: CertConfig,
        cert_dir: str,
        *,
        on_change: Callable[[], object] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.client, self.cfg, self.cert_dir = client, cfg, cert_dir
        self.on_change = on_change
        self.clock = clock
        self.state: CertState | None = None
        self._seen_published: dict[str, dt.datetime] = {}
        self._written: tuple[bytes, bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error = ""

    @property
    def cert_file(self) -> str:
        return os.path.join(self.cert_dir, CERT_KEY)

    @property
    def key_file(self) -> str:
        return os.path.join(self.cert_dir, KEY_KEY)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the loop in a thread (the first sync happens at once; start never blocks on the API)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="webhook-certs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        failures = 0
        delay = 0.0
        poll = self.cfg.poll_interval.total_seconds()
        while not self._stop.wait(delay):
            try:
                wrote = self.sync()
                failures = 0
                self.last_error = ""
                delay = 0.2 if wrote else poll * random.uniform(0.9, 1.1)
            except Exception as e:
                failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
                delay = min(poll, 0.5 * 2 ** min(failures, 8)) * random.uniform(0.8, 1.2)
                log.warning(
                    "webhook certificate sync failed",
                    secret=f"{self.cfg.namespace}/{self.cfg.secret_name}",
                    error=self.last_error,
                    retry_in=round(delay, 1),
                )

    # ------------------------------------------------------------------ one round
    def sync(self) -> bool:
        """Read, decide, write, publish, install. Returns True when this replica wrote the Secret (so the
        caller looks again soon). Raises ApiError when the API cannot be reached."""
        for _ in range(3):
            secret = self._get_secret()
            state = decode_secret(secret, self.cfg) if secret is not None else None
            configs = self._get_configs()
            now = self.clock()
            published_at = self._published_at(state, configs, now)
            decision = plan(state, self.cfg, now, published_at=published_at)
            wrote = False
            if decision.action is not Action.NONE:
                if not self._write_secret(secret, decision.state):
                    continue  # another replica wrote first: read its result
                wrote = True
                log.info(
                    "webhook certificates updated",
                    action=decision.action.value,
                    reason=decision.reason,
                    secret=f"{self.cfg.namespace}/{self.cfg.secret_name}",
                    serving_not_after=decision.state.serving.not_after.isoformat()
                    if decision.state.serving
                    else None,
                    cas=len(decision.state.cas),
                )
            self.state = decision.state
            self._publish(decision.state, configs, now)
            self._install(decision.state)
            return wrote
        return True

    def _get_secret(self) -> JSON | None:
        try:
            return self.client.get(SECRETS, self.cfg.secret_name, self.cfg.namespace)
        except NotFoundError:
            return None

    def _write_secret(self, existing: JSON | None, state: CertState) -> bool:
        body = encode_secret(state, self.cfg, existing)
        try:
            if existing is None:
                self.client.create(SECRETS, body, self.cfg.namespace)
            else:
                self.client.replace(SECRETS, body, self.cfg.namespace)
        except (AlreadyExistsError, ConflictError):
            return False
        return True

    def _get_configs(self) -> dict[str, JSON | ApiError | None]:
        """Each configuration, None when it does not exist, or the error that kept it from being read (an
        unreadable configuration must not stop this replica from serving the certificate it has)."""
        out: dict[str, JSON | ApiError | None] = {}
        for name in self.cfg.webhook_configs:
            try:
                out[name] = self.client.get(VALIDATING_WEBHOOK_CONFIGURATIONS, name)
            except NotFoundError:
                out[name] = None
            except ApiError as e:
                log.warning("cannot read the webhook configuration", name=name, error=str(e))
                out[name] = e
        return out

    @staticmethod
    def _published_cas(config: JSON) -> list[list[x509.Certificate]]:
        return [
            load_cas(_unb64((w.get("clientConfig") or {}).get("caBundle")))
            for w in config.get("webhooks") or []
        ]

    def _published_at(
        self, state: CertState | None, configs: Mapping[str, JSON | ApiError | None], now: dt.datetime
    ) -> dt.datetime | None:
        if state is None or state.pending is None:
            self._seen_published.clear()
            return None
        issuer = state.issuer_of(state.pending)
        if issuer is None:
            return None
        fp = _fingerprint(issuer)
        for config in configs.values():
            # A configuration that does not exist sends no requests, so it cannot be broken by a promotion.
            if config is None:
                continue
            if isinstance(config, ApiError):
                self._seen_published.pop(fp, None)
                return None
            for bundle in self._published_cas(config):
                if fp not in {_fingerprint(c) for c in bundle}:
                    self._seen_published.pop(fp, None)
                    return None
        return self._seen_published.setdefault(fp, now)

    def _publish(
        self, state: CertState, configs: Mapping[str, JSON | ApiError | None], now: dt.datetime
    ) -> None:
        for name, config in configs.items():
            if config is None or isinstance(config, ApiError):
                continue
            changed = False
            for webhook, published in zip(
                config.get("webhooks") or [], self._published_cas(config), strict=True
            ):
                bundle = merge_bundle(list(state.cas), published, now)
                wanted = _b64(b"".join(_pem(c) for c in bundle))
                client_config = webhook.setdefault("clientConfig", {})
                if client_config.get("caBundle") != wanted:
                    client_config["caBundle"] = wanted
                    changed = True
            if not changed:
                continue
            config.get("metadata", {}).pop("managedFields", None)
            try:
                self.client.replace(VALIDATING_WEBHOOK_CONFIGURATIONS, config)
            except ConflictError:
                log.debug("webhook configuration changed meanwhile; publishing again next round", name=name)
                continue
            except ApiError as e:
                log.warning("cannot publish the CA bundle", webhook_configuration=name, error=str(e))
                continue
            log.info("CA bundle published", webhook_configuration=name, cas=len(state.cas))

    def _install(self, state: CertState) -> None:
        assert state.serving is not None
        wanted = (state.serving.cert_pem, state.serving.key_pem)
        if wanted == self._written and _same_files(self.cert_file, self.key_file, wanted):
            return
        os.makedirs(self.cert_dir, mode=0o700, exist_ok=True)
        # Key first: the reloader retries a certificate whose key has not arrived yet.
        _atomic_write(self.key_file, wanted[1])
        _atomic_write(self.cert_file, wanted[0])
        self._written = wanted
        log.info(
            "serving certificate installed",
            dir=self.cert_dir,
            sha256=state.serving.fingerprint[:16],
            not_after=state.serving.not_after.isoformat(),
        )
        if self.on_change is not None:
            self.on_change()

    def ready(self) -> str | None:
        """None once a certificate has been installed."""
        if self._written is None:
            return f"no webhook certificate yet{': ' + self.last_error if self.last_error else ''}"
        return None


def _same_files(cert_file: str, key_file: str, wanted: tuple[bytes, bytes]) -> bool:
    try:
        with open(cert_file, "rb") as c, open(key_file, "rb") as k:
            return (c.read(), k.read()) == wanted
    except OSError:
        return False


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
