"""Which objects a rejection holds back: bisection over what changed, then quarantine."""

from __future__ import annotations

from routing_engine.api.resources import ModelServer, ObjectKey
from modelroute.quarantine import Quarantine


def server(name: str, port: int = 8080) -> ModelServer:
    return ModelServer.model_validate({
        "apiVersion": "networking.matrixinfer.ai/v1alpha1", "kind": "ModelServer", "metadata": {"name": name},
        "spec": {"modelInferRef": {"name": name}, "service": {"port": port}, "routing": {"path": f"/v1/{name}"}}})


def key(name: str) -> ObjectKey:
    return ObjectKey("ModelServer", "default", name)


def judge(q: Quarantine, objects, bad: set[str]) -> tuple[str, bool]:  # type: ignore[no-untyped-def]
    """One round: compile the effective world; Envoy rejects it iff a bad object is in it."""
    effective = q.effective(objects)
    q.compiled(effective)
    culprits = {o.key for o in effective if o.key.name in bad and o.spec.service.port != 8080}
    if culprits:
        return "rejected", q.rejected_by_envoy(frozenset(culprits | {key("a")}), "bad listener")
    return "accepted", q.accepted()


def test_one_changed_suspect_is_quarantined_and_its_good_version_keeps_serving() -> None:
    q = Quarantine()
    good = [server("a"), server("b")]
    assert judge(q, good, set()) == ("accepted", False)
    edited = [server("a"), server("b", port=9999)]  # b's new version is bad
    assert judge(q, edited, {"b"}) == ("rejected", True)
    assert set(q.rejected) == {key("b")} and q.rejected[key("b")].serving_previous
    effective = q.effective(edited)
    assert effective[1] is good[1]  # the last good version is compiled in its place
    assert judge(q, edited, {"b"}) == ("accepted", False)
    fixed = [server("a"), server("b", port=9000)]
    assert q.effective(fixed) == tuple(fixed) and not q.rejected  # a new version ends the quarantine


def test_bisection_finds_the_one_bad_object_among_many_changes() -> None:
    q = Quarantine()
    names = [f"s{i:02}" for i in range(16)]
    judge(q, [server(n) for n in names], set())
    changed = [server(n, port=9000 + i) for i, n in enumerate(names)]  # every object changed, s11 is bad
    rounds = 0
    while True:
        rounds += 1
        verdict, again = judge(q, changed, {"s11"})
        if not again:
            break
        assert rounds < 20
    assert set(q.rejected) == {key("s11")} and q.held == ()
    assert rounds <= 2 * 4 + 2  # ~log2(16) rejections and releases
    effective = {o.key: o for o in q.effective(changed)}
    assert all(effective[key(n)] is o for n, o in zip(names, changed) if n != "s11")  # the rest is served


def test_a_new_object_with_no_good_version_is_left_out_and_reported() -> None:
    q = Quarantine()
    judge(q, [server("a")], set())
    objects = [server("a"), server("new", port=9000)]
    assert judge(q, objects, {"new"}) == ("rejected", True)
    assert q.effective(objects) == (objects[0],)
    statuses = q.statuses({})
    status = statuses[key("new")]
    assert status.phase == "Failed"
    (programmed,) = status.conditions
    assert programmed.status == "False" and "bad listener" in programmed.message and "not served" in programmed.message
    assert q.effective([server("a")]) == (objects[0],) and not q.rejected  # deleted: forgotten
