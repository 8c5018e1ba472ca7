"""Self-managed certificates: issuance, the rotation decision on an injected clock, the Secret's encoding."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ojsctrl.runtime.certs import (
    MAX_CAS,
    Action,
    CertConfig,
    CertState,
    Pair,
    SelfManagedCertificates,
    decode_secret,
    encode_secret,
    issue,
    merge_bundle,
    plan,
)

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
V = dt.timedelta(hours=30)
CFG = CertConfig(
    namespace="ojs-system",
    secret_name="webhook-cert",
    dns_names=("svc.ojs-system.svc", "svc.ojs-system.svc.cluster.local"),
    validity=V,
    webhook_configs=("vwc",),
)


def fp(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def fresh(now: dt.datetime = T0, cfg: CertConfig = CFG) -> CertState:
    p = plan(None, cfg, now)
    assert p.action is Action.FRESH
    return p.state


def test_config_timings() -> None:
    assert CFG.renew_before == V / 3
    assert CFG.promote_delay == dt.timedelta(seconds=60)
    assert CFG.poll_interval == dt.timedelta(seconds=60)
    short = CertConfig(namespace="n", secret_name="s", dns_names=("a",), validity=dt.timedelta(seconds=30))
    assert short.promote_delay == dt.timedelta(seconds=3)
    assert short.poll_interval == dt.timedelta(seconds=1)
    tiny = CertConfig(namespace="n", secret_name="s", dns_names=("a",), validity=dt.timedelta(seconds=10))
    assert tiny.promote_delay == dt.timedelta(seconds=1)


def test_issue_makes_a_ca_and_a_serving_certificate() -> None:
    ca, pair = issue(CFG, T0)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
    pair.cert.verify_directly_issued_by(ca)
    assert pair.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = pair.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    dns, ips = pair.sans()
    assert dns == set(CFG.dns_names) and ips == {"127.0.0.1"}
    assert pair.not_after == T0 + V and ca.not_valid_after_utc == T0 + V
    # Backdated, so a clock slightly behind accepts it.
    assert pair.cert.not_valid_before_utc < T0
    # Each CA has its own subject (old and new sit side by side in one bundle).
    ca2, _ = issue(CFG, T0)
    assert ca2.subject != ca.subject


def test_pair_load_rejects_a_mismatched_key() -> None:
    _, a = issue(CFG, T0)
    _, b = issue(CFG, T0)
    assert Pair.load(a.cert_pem, a.key_pem).fingerprint == a.fingerprint
    with pytest.raises(ValueError, match="does not match"):
        Pair.load(a.cert_pem, b.key_pem)


def test_fresh_state_then_nothing_to_do() -> None:
    state = fresh()
    assert len(state.cas) == 1 and state.serving is not None and state.pending is None
    assert state.issuer_of(state.serving) is state.cas[0]
    for later in (T0, T0 + dt.timedelta(hours=1), T0 + V * 2 / 3 - dt.timedelta(seconds=1)):
        p = plan(state, CFG, later)
        assert p.action is Action.NONE and p.state is state


def test_rotation_starts_a_third_before_expiry_with_both_cas_in_the_bundle() -> None:
    state = fresh()
    due = T0 + V - CFG.renew_before
    p = plan(state, CFG, due)
    assert p.action is Action.ROTATE
    new = p.state
    # The served certificate does not change yet; the bundle carries old and new CA.
    assert new.serving == state.serving
    assert [fp(c) for c in new.cas[:1]] == [fp(state.cas[0])] and len(new.cas) == 2
    assert new.pending is not None and new.pending_since == due
    assert new.issuer_of(new.pending) is new.cas[1]
    assert new.pending.not_after == due + V


def test_promotion_waits_until_the_new_ca_was_seen_published_for_the_delay() -> None:
    rotating = plan(fresh(), CFG, T0 + V * 2 / 3).state
    since = rotating.pending_since
    assert since is not None
    # Not published: no promotion, however long.
    assert plan(rotating, CFG, since + dt.timedelta(hours=5)).action is Action.NONE
    # Published a bit after the rotation started: the delay counts from when it was seen.
    seen = since + dt.timedelta(seconds=30)
    assert plan(
        rotating, CFG, seen + CFG.promote_delay - dt.timedelta(seconds=1), published_at=seen
    ).action is (Action.NONE)
    p = plan(rotating, CFG, seen + CFG.promote_delay, published_at=seen)
    assert p.action is Action.PROMOTE
    assert p.state.serving == rotating.pending and p.state.pending is None
    # The old CA stays (replicas still serving the old certificate for a poll interval keep working).
    assert [fp(c) for c in p.state.cas] == [fp(c) for c in rotating.cas]
    # Seen "published" before the rotation even started (a stale observation) counts from the start.
    early = since - dt.timedelta(minutes=10)
    assert plan(rotating, CFG, since + CFG.promote_delay / 2, published_at=early).action is Action.NONE


def test_promotion_happens_anyway_when_the_served_certificate_is_about_to_expire() -> None:
    state = fresh()
    rotating = plan(state, CFG, T0 + V * 2 / 3).state
    assert state.serving is not None
    at = state.serving.not_after - CFG.promote_delay
    assert plan(rotating, CFG, at - dt.timedelta(seconds=1)).action is Action.NONE
    assert plan(rotating, CFG, at).action is Action.PROMOTE


def test_expired_cas_are_pruned() -> None:
    rotating = plan(fresh(), CFG, T0 + V * 2 / 3).state
    promoted = plan(rotating, CFG, T0 + V * 0.7, published_at=T0 + V * 2 / 3).state
    assert len(promoted.cas) == 2
    assert plan(promoted, CFG, T0 + V - dt.timedelta(seconds=1)).action is Action.NONE
    p = plan(promoted, CFG, T0 + V)
    assert p.action is Action.PRUNE and [fp(c) for c in p.state.cas] == [fp(promoted.cas[1])]


def test_an_expired_or_broken_serving_certificate_is_replaced_at_once() -> None:
    state = fresh()
    p = plan(state, CFG, T0 + V)
    assert p.action is Action.FRESH and "expired" in p.reason
    assert p.state.serving is not None and p.state.serving.not_after == T0 + 2 * V
    foreign_ca, _ = issue(CFG, T0)
    orphan = CertState(cas=(foreign_ca,), serving=state.serving)
    assert plan(orphan, CFG, T0).action is Action.FRESH
    assert plan(CertState(cas=state.cas, serving=None), CFG, T0).action is Action.FRESH


def test_wanted_names_trigger_a_rotation_and_names_only_grow() -> None:
    state = fresh()
    renamed = CertConfig(
        namespace="ojs-system", secret_name="webhook-cert", dns_names=("new.ojs-system.svc",), validity=V
    )
    p = plan(state, renamed, T0 + dt.timedelta(minutes=1))
    assert p.action is Action.ROTATE and "new.ojs-system.svc" in p.reason
    assert p.state.pending is not None
    dns, _ = p.state.pending.sans()
    assert dns == {"new.ojs-system.svc", *CFG.dns_names}
    # A replica still on the old names is satisfied by the union: no ping-pong.
    assert plan(p.state, CFG, T0 + dt.timedelta(minutes=2)).action is Action.NONE


def test_a_shorter_configured_validity_rotates_a_long_lived_certificate() -> None:
    long_lived = fresh(
        cfg=CertConfig(namespace="n", secret_name="s", dns_names=CFG.dns_names, validity=V * 100)
    )
    p = plan(long_lived, CFG, T0 + dt.timedelta(minutes=1))
    assert p.action is Action.ROTATE and "outlives" in p.reason


def test_a_broken_pending_certificate_is_made_again() -> None:
    rotating = plan(fresh(), CFG, T0 + V * 2 / 3).state
    no_since = CertState(
        cas=rotating.cas, serving=rotating.serving, pending=rotating.pending, pending_since=None
    )
    p = plan(no_since, CFG, T0 + V * 0.7)
    assert p.action is Action.ROTATE and p.state.pending_since == T0 + V * 0.7
    assert p.state.pending != rotating.pending


def test_timeline_the_bundle_always_carries_the_ca_before_its_certificate_is_served() -> None:
    """Three validity periods, second by second (scaled): the API server's view is the bundle published
    at the previous step; the served certificate must always be valid and trusted by it."""
    cfg = CertConfig(
        namespace="n", secret_name="s", dns_names=("a.n.svc",), validity=dt.timedelta(seconds=90)
    )
    now = T0
    state = plan(None, cfg, now).state
    published = list(state.cas)  # what the webhook configuration holds
    seen_at: dict[bytes, dt.datetime] = {}
    actions: list[tuple[float, Action]] = []
    while now < T0 + 3 * cfg.validity:
        now += dt.timedelta(seconds=1)
        published_at = None
        if state.pending is not None:
            issuer = state.issuer_of(state.pending)
            assert issuer is not None
            if fp(issuer) in {fp(c) for c in published}:
                published_at = seen_at.setdefault(fp(issuer), now)
        p = plan(state, cfg, now, published_at=published_at)
        if p.action is not Action.NONE:
            actions.append(((now - T0).total_seconds(), p.action))
        new = p.state
        assert new.serving is not None
        served_issuer = new.issuer_of(new.serving)
        assert served_issuer is not None
        assert now < new.serving.not_after
        if p.action is not Action.FRESH:
            assert fp(served_issuer) in {fp(c) for c in published}, f"served before published at {now}"
        assert len(new.cas) <= MAX_CAS
        state = new
        published = merge_bundle(list(state.cas), published, now)
    rotations = [t for t, a in actions if a is Action.ROTATE]
    promotions = [t for t, a in actions if a is Action.PROMOTE]
    assert [a for _, a in actions].count(Action.FRESH) == 0
    assert len(rotations) >= 3 and len(promotions) == len(rotations)
    assert all(p - r >= cfg.promote_delay.total_seconds() for r, p in zip(rotations, promotions, strict=True))
    assert rotations[0] == pytest.approx(60, abs=1)


def test_secret_round_trip_keeps_foreign_keys_and_metadata() -> None:
    rotating = plan(fresh(), CFG, T0 + V * 2 / 3).state
    existing = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": "webhook-cert",
            "namespace": "ojs-system",
            "resourceVersion": "42",
            "labels": {"keep": "me"},
            "annotations": {"other": "x"},
            "managedFields": [{"manager": "x"}],
        },
        "data": {"extra": base64.b64encode(b"keep").decode(), "tls-next.crt": "junk"},
    }
    body = encode_secret(rotating, CFG, existing)
    assert body["type"] == "Opaque"
    assert body["metadata"]["resourceVersion"] == "42" and "managedFields" not in body["metadata"]
    assert body["metadata"]["labels"]["keep"] == "me" and body["metadata"]["annotations"]["other"] == "x"
    assert body["data"]["extra"] == existing["data"]["extra"]
    back = decode_secret(body, CFG)
    assert back.serving == rotating.serving and back.pending == rotating.pending
    assert back.pending_since == rotating.pending_since
    assert [fp(c) for c in back.cas] == [fp(c) for c in rotating.cas]
    # After promotion the pending keys and the annotation go.
    promoted = plan(rotating, CFG, T0 + V * 0.7, published_at=T0 + V * 2 / 3).state
    body2 = encode_secret(promoted, CFG, body)
    assert (
        "tls-next.crt" not in body2["data"]
        and CFG.rotation_annotation not in body2["metadata"]["annotations"]
    )
    new = encode_secret(fresh(), CFG)
    assert new["type"] == "kubernetes.io/tls" and new["metadata"]["namespace"] == "ojs-system"


def test_decode_treats_garbage_as_absent() -> None:
    state = decode_secret(
        {"data": {"tls.crt": "!!!", "tls.key": 5, "ca.crt": base64.b64encode(b"nope").decode()}}, CFG
    )
    assert state.serving is None and state.cas == () and state.pending is None
    assert plan(state, CFG, T0).action is Action.FRESH


def test_merge_bundle_never_drops_a_newer_published_ca() -> None:
    old_ca, _ = issue(CFG, T0)
    mine, _ = issue(CFG, T0 + dt.timedelta(hours=1))
    newer, _ = issue(CFG, T0 + dt.timedelta(hours=2))
    now = T0 + dt.timedelta(hours=3)
    merged = merge_bundle([mine], [old_ca, mine, newer], now)
    assert [fp(c) for c in merged] == [fp(mine), fp(newer)]
    # Expired extras are not kept.
    assert merge_bundle([mine], [newer], T0 + dt.timedelta(hours=100)) == [mine]


def test_install_writes_private_files_atomically_and_signals_once(tmp_path: Path) -> None:
    calls: list[int] = []
    certs = SelfManagedCertificates(None, CFG, str(tmp_path / "certs"), on_change=lambda: calls.append(1))  # type: ignore[arg-type]
    state = fresh()
    assert certs.ready() is not None
    certs._install(state)
    certs._install(state)
    assert calls == [1]
    assert certs.ready() is None
    assert state.serving is not None
    assert Path(certs.cert_file).read_bytes() == state.serving.cert_pem
    assert Path(certs.key_file).read_bytes() == state.serving.key_pem
    assert stat.S_IMODE(os.stat(certs.key_file).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path / "certs")) == ["tls.crt", "tls.key"]
    # Someone removed the files: they are written again.
    os.unlink(certs.cert_file)
    certs._install(state)
    assert calls == [1, 1] and Path(certs.cert_file).exists()
