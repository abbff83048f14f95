"""ACK/NACK → Programmed conditions on the objects that own the resources."""

from modelroute.programmed import ProgrammedTracker, with_programmed
from routing_engine.api.resources import ObjectKey
from routing_engine.world import ConditionView, ObjectStatus

R = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
C = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
A = ObjectKey("ModelRoute", "default", "a")
B = ObjectKey("ModelServer", "default", "b")
OWNERS = {(R, "listener/8080"): (A, B), (C, "modelserver/default/b"): (B,)}


def _tracker() -> ProgrammedTracker:
    tracker = ProgrammedTracker()
    tracker.use(OWNERS)
    return tracker


def test_unknown_until_every_resource_of_an_owner_is_acked():
    tracker = _tracker()
    tracker.ack(R, ["listener/8080"])
    conditions = tracker.conditions()
    assert conditions[A].status == "True"
    assert conditions[B].status == "Unknown"  # its cluster is not acked yet
    tracker.ack(C, ["modelserver/default/b"])
    assert tracker.conditions()[B].status == "True"


def test_nack_blames_the_resources_envoy_names():
    tracker = _tracker()
    tracker.ack(R, ["listener/8080"])
    tracker.nack(C, ["modelserver/default/b", "other"], "cluster 'modelserver/default/b': bad lb policy")
    conditions = tracker.conditions()
    assert conditions[B].status == "False" and "bad lb policy" in conditions[B].message
    assert conditions[A].status == "True"


def test_nack_naming_nothing_blames_the_whole_response():
    tracker = _tracker()
    tracker.nack(R, ["listener/8080"], "something went wrong")
    conditions = tracker.conditions()
    assert conditions[A].status == "False" and conditions[B].status == "False"


def test_a_new_compile_forgets_removed_resources_and_keeps_known_ones():
    tracker = _tracker()
    tracker.ack(C, ["modelserver/default/b"])
    tracker.use({(C, "modelserver/default/b"): (B,)})
    assert tracker.conditions() == {B: ConditionView("Programmed", "True", "Programmed",
                                                     "Envoy accepted the configuration")}


def test_rejected_objects_fail_and_others_keep_their_phase():
    statuses = {A: ObjectStatus("Active", (ConditionView("Accepted", "True", "Accepted"),)),
                B: ObjectStatus("Ready", ())}
    merged = with_programmed(statuses, {A: ConditionView("Programmed", "False", "ValidationFailed", "x"),
                                        B: ConditionView("Programmed", "True", "Programmed")})
    assert merged[A].phase == "Failed" and [c.type for c in merged[A].conditions] == ["Accepted", "Programmed"]
    assert merged[B].phase == "Ready"
