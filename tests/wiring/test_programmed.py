"""ACK/NACK → Programmed conditions on the objects that own the resources."""

from modelroute.programmed import ProgrammedTracker, with_programmed
from routing_engine.api.resources import ObjectKey
from routing_engine.world import ConditionView, EnvoyResource, ObjectStatus

R = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
C = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
A = ObjectKey("ModelRoute", "default", "a")
B = ObjectKey("ModelServer", "default", "b")
OWNERS = {(R, "listener/8080"): (A, B), (C, "modelserver/default/b"): (B,)}


def _resources(**versions: str):  # type: ignore[no-untyped-def]
    """Compiled resources of OWNERS at the given versions (route table `r`, cluster `c`)."""
    def res(type_url: str, name: str, version: str) -> EnvoyResource:
        return EnvoyResource(type_url, name, b"", version)
    return {R: {"listener/8080": res(R, "listener/8080", versions.get("r", "r1"))},
            C: {"modelserver/default/b": res(C, "modelserver/default/b", versions.get("c", "c1"))}}


def _tracker(**versions: str) -> ProgrammedTracker:
    tracker = ProgrammedTracker()
    tracker.use(OWNERS, _resources(**versions))
    return tracker


def test_unknown_until_every_resource_of_an_owner_is_acked():
    tracker = _tracker()
    tracker.ack(R, {"listener/8080": "r1"})
    conditions = tracker.conditions()
    assert conditions[A].status == "True"
    assert conditions[B].status == "Unknown"  # its cluster is not acked yet
    tracker.ack(C, {"modelserver/default/b": "c1"})
    assert tracker.conditions()[B].status == "True"
    assert tracker.all_accepted() and tracker.rejected() is None


def test_an_ack_of_another_version_does_not_count():
    tracker = _tracker()
    tracker.ack(R, {"listener/8080": "r0"})  # an older response, ACKed late
    assert tracker.conditions()[A].status == "Unknown"


def test_nack_blames_the_resources_envoy_names():
    tracker = _tracker()
    tracker.ack(R, {"listener/8080": "r1"})
    tracker.nack(C, {"modelserver/default/b": "c1", "other": "x"}, "cluster 'modelserver/default/b': bad lb policy")
    conditions = tracker.conditions()
    assert conditions[B].status == "False" and "bad lb policy" in conditions[B].message
    assert conditions[A].status == "True"
    rejected = tracker.rejected()
    assert rejected is not None and rejected.owners == {B} and "bad lb policy" in rejected.message


def test_nack_naming_nothing_blames_the_whole_response():
    tracker = _tracker()
    tracker.nack(R, {"listener/8080": "r1"}, "something went wrong")
    conditions = tracker.conditions()
    assert conditions[A].status == "False" and conditions[B].status == "False"


def test_a_fix_back_to_an_accepted_version_clears_the_rejection_at_once():
    """Envoy already holds the old version, so it is never resent (no new ACK comes):
    the verdict on that version is remembered."""
    tracker = _tracker()
    tracker.ack(R, {"listener/8080": "r1"})
    tracker.use(OWNERS, _resources(r="r2"))
    tracker.nack(R, {"listener/8080": "r2"}, "bad regex")
    assert tracker.conditions()[A].status == "False"
    tracker.use(OWNERS, _resources(r="r1"))  # the bad object was fixed or deleted
    assert tracker.conditions()[A].status == "True"


def test_a_new_compile_forgets_removed_resources_and_keeps_known_ones():
    tracker = _tracker()
    tracker.ack(C, {"modelserver/default/b": "c1"})
    tracker.use({(C, "modelserver/default/b"): (B,)}, {C: _resources()[C]})
    assert tracker.conditions() == {B: ConditionView("Programmed", "True", "Programmed",
                                                     "Envoy accepted the configuration")}


def test_rejected_objects_fail_and_others_keep_their_phase():
    statuses = {A: ObjectStatus("Active", (ConditionView("Accepted", "True", "Accepted"),)),
                B: ObjectStatus("Ready", ())}
    merged = with_programmed(statuses, {A: ConditionView("Programmed", "False", "ValidationFailed", "x"),
                                        B: ConditionView("Programmed", "True", "Programmed")})
    assert merged[A].phase == "Failed" and [c.type for c in merged[A].conditions] == ["Accepted", "Programmed"]
    assert merged[B].phase == "Ready"


def test_a_resource_that_leaves_and_comes_back_keeps_its_verdict():
    """A bisection step or a revert renames a route table (names follow content) and back:
    Envoy already holds the old one and is never sent it again, so its verdict must stay."""
    tracker = _tracker()
    tracker.ack(R, {"listener/8080": "r1"})
    tracker.ack(C, {"modelserver/default/b": "c1"})
    tracker.use({(C, "modelserver/default/b"): (B,)}, {C: _resources()[C]})  # the table left
    tracker.use(OWNERS, _resources())  # and came back
    assert tracker.all_accepted()
