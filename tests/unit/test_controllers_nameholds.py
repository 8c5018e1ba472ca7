"""NameHolds: which owners wait for a child name a foreign object holds, and when to wake them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from ojsctrl.controllers.children import NameHolds
from ojsctrl.runtime.controller import Request
from ojsctrl.runtime.informer import Informer, Store


def cache(*names: tuple[str, str]) -> Any:
    store = Store()
    for ns, name in names:
        store.upsert(f"{ns}/{name}", {"metadata": {"namespace": ns, "name": name}})
    return SimpleNamespace(store=store)


def meta(ns: str, name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}}


def holds(**sources: Any) -> NameHolds:
    return NameHolds({kind: cast(tuple[Informer, ...], infs) for kind, infs in sources.items()})


def test_an_event_of_a_held_name_maps_to_the_owners_waiting_for_it() -> None:
    managed, foreign = cache(), cache(("a", "web-config"))
    h = holds(ConfigMap=(managed, foreign))
    owner = Request("a", "web")
    assert h.record(owner, {("ConfigMap", "web-config")}) == (False, False)
    configmaps = h.mapper("ConfigMap")
    assert configmaps(meta("a", "web-config")) == [owner]
    # Another namespace, name or kind is not what the owner waits for.
    assert configmaps(meta("b", "web-config")) == []
    assert configmaps(meta("a", "web")) == []
    assert h.mapper("Secret")(meta("a", "web-config")) == []


def test_a_name_no_longer_taken_wakes_nobody() -> None:
    h = holds(ConfigMap=(cache(("a", "x")),), Service=(cache(("a", "s")),))
    owner = Request("a", "web")
    h.record(owner, {("ConfigMap", "x"), ("Service", "s")})
    h.record(owner, {("Service", "s")})
    assert h.mapper("ConfigMap")(meta("a", "x")) == []
    assert h.mapper("Service")(meta("a", "s")) == [owner]
    h.forget(owner)
    assert h.mapper("Service")(meta("a", "s")) == []
    assert len(h) == 0


def test_owners_sharing_a_name_are_all_woken_and_forgotten_one_by_one() -> None:
    h = holds(Service=(cache(("a", "shared")),))
    one, two = Request("a", "one"), Request("a", "two")
    h.record(one, {("Service", "shared")})
    h.record(two, {("Service", "shared")})
    assert h.mapper("Service")(meta("a", "shared")) == [one, two]
    h.forget(one)
    assert h.mapper("Service")(meta("a", "shared")) == [two]


def test_a_name_gone_before_the_record_is_reported_once() -> None:
    # The object's deletion reached the handlers before the owner waited: nobody would wake it.
    h = holds(ConfigMap=(cache(), cache()))
    owner = Request("a", "web")
    assert h.record(owner, {("ConfigMap", "web-config")}) == (True, False)
    # The same set again adds nothing new: no second immediate wake-up.
    assert h.record(owner, {("ConfigMap", "web-config")}) == (False, False)


def test_a_kind_no_informer_sees_whole_asks_for_a_recheck() -> None:
    h = holds(ConfigMap=(cache(("a", "x")),))
    owner = Request("a", "web")
    assert h.record(owner, {("PodDisruptionBudget", "web-server"), ("ConfigMap", "x")}) == (False, True)
    assert h.record(owner, {("ConfigMap", "x")}) == (False, False)
