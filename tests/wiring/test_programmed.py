"""ACK/NACK → Programmed conditions on the objects that own the resources."""

from modelroute.programmed import Merged, ProgrammedTracker, with_programmed
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


# --- the incremental bookkeeping answers as a full scan would ---------------------------

from types import MappingProxyType  # noqa: E402

from hypothesis import given, settings, strategies as st  # noqa: E402

NAMES = ["t0", "t1", "t2", "t3"]
KEYS = [A, B, ObjectKey("ModelServer", "default", "c")]


def _scan(tracker: ProgrammedTracker) -> tuple[bool, frozenset, dict]:  # type: ignore[type-arg]
    """What `all_accepted`, `rejected` and `conditions` mean, by scanning every resource
    of the current compile (the definition the bookkeeping must agree with)."""
    states = {rid: tracker._state(rid) for rid in tracker.owners}
    accepted = bool(tracker.owners) and all(s == (True, None) for s in states.values())
    failed = frozenset(rid for rid, (known, error) in states.items() if known and error is not None)
    conditions: dict = {}
    for rid, owners in sorted(tracker.owners.items()):
        known, error = states[rid]
        for owner in owners:
            now = conditions.get(owner, "True")
            if known and error is not None:
                conditions[owner] = "False"
            elif not known and now != "False":
                conditions[owner] = "Unknown"
            else:
                conditions.setdefault(owner, now)
    return accepted, failed, conditions


compiles = st.dictionaries(st.tuples(st.sampled_from([R, C]), st.sampled_from(NAMES)),
                           st.tuples(st.sampled_from(["v1", "v2", "v3"]), st.sets(st.sampled_from(KEYS), max_size=2)),
                           max_size=6)
steps = st.lists(st.one_of(
    st.tuples(st.just("use"), compiles, st.booleans()),
    st.tuples(st.just("ack"), st.sampled_from([R, C]), st.dictionaries(st.sampled_from(NAMES),
                                                                       st.sampled_from(["v1", "v2", "v3"]), max_size=3)),
    st.tuples(st.just("nack"), st.sampled_from([R, C]), st.dictionaries(st.sampled_from(NAMES),
                                                                        st.sampled_from(["v1", "v2", "v3"]), max_size=3)),
), max_size=25)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_the_incremental_verdicts_agree_with_a_scan_of_every_resource(sequence) -> None:  # type: ignore[no-untyped-def]
    """...and with a tracker handed a fresh dict on every ACK: the other is handed one
    read-only mapping per content, the same object each time (as thousands of Envoys
    ACK the snapshot's shared selection), which it may judge once."""
    tracker, fresh = ProgrammedTracker(), ProgrammedTracker()
    shared: dict = {}
    last: dict = {}
    for step in sequence:
        if step[0] == "use":
            _, compiled, reuse = step
            by_type: dict = {}
            for (t, n), (v, _owners) in compiled.items():
                by_type.setdefault(t, {})[n] = EnvoyResource(t, n, b"", v)
            if reuse:  # a type unchanged since the last compile is handed on as the same object
                by_type = {t: last[t] if t in last and {n: r.version for n, r in last[t].items()}
                           == {n: r.version for n, r in m.items()} else m for t, m in by_type.items()}
            last = by_type
            tracker.use({rid: tuple(sorted(o)) for rid, (_, o) in compiled.items()}, by_type)
            fresh.use({rid: tuple(sorted(o)) for rid, (_, o) in compiled.items()}, by_type)
        elif step[0] == "ack":
            key = (step[1], frozenset(step[2].items()))
            tracker.ack(step[1], shared.setdefault(key, MappingProxyType(dict(step[2]))))
            fresh.ack(step[1], dict(step[2]))
        else:
            tracker.nack(step[1], step[2], "rejected " + ",".join(sorted(step[2])[:1]))
            fresh.nack(step[1], step[2], "rejected " + ",".join(sorted(step[2])[:1]))
        assert tracker.conditions() == fresh.conditions()
        accepted, failed, conditions = _scan(tracker)
        assert tracker.all_accepted() == accepted
        rejected = tracker.rejected()
        assert (frozenset(rejected.resources) if rejected else frozenset()) == failed
        assert {k: c.status for k, c in tracker.conditions().items()} == conditions


def test_a_publication_with_nothing_new_hands_back_the_last_merge():
    """The memo: the same statuses mapping with equal conditions gives the very result of
    the last call; a changed condition (or another statuses mapping) merges again, and an
    object whose inputs are unchanged keeps its merged status object."""
    statuses = {A: ObjectStatus("Active", ()), B: ObjectStatus("Ready", ())}
    memo = Merged()
    tracker = _tracker()
    first = with_programmed(statuses, tracker.conditions(), memo)
    assert first[A].conditions[-1].status == "Unknown"
    assert with_programmed(statuses, tracker.conditions(), memo) is first
    tracker.ack(R, {"listener/8080": "r1"})
    tracker.ack(C, {"modelserver/default/b": "c1"})
    settled = with_programmed(statuses, tracker.conditions(), memo)
    assert settled is not first and settled[A].conditions[-1].status == "True"
    again = with_programmed(dict(statuses), tracker.conditions(), memo)  # another mapping, same objects
    assert again is not settled and again[A] is settled[A] and again[B] is settled[B]


def test_conditions_cover_every_owner_in_order_whatever_the_verdicts():
    tracker = _tracker()
    assert list(tracker.conditions()) == [A, B]
    tracker.ack(R, {"listener/8080": "r1"})
    tracker.ack(C, {"modelserver/default/b": "c1"})
    assert list(tracker.conditions()) == [A, B]
    assert {c.status for c in tracker.conditions().values()} == {"True"}
    tracker.use({(C, "modelserver/default/b"): (B,)}, {C: _resources()[C]})  # owners changed: A left
    assert list(tracker.conditions()) == [B]


class _Counting(ProgrammedTracker):
    """Counts verdicts recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded = 0

    def _record(self, rid, version, verdict):  # type: ignore[no-untyped-def]
        self.recorded += 1
        super()._record(rid, version, verdict)


def test_envoys_acking_one_shared_selection_are_judged_once_and_a_nack_between_is_not_forgotten():
    tracker = _Counting()
    tracker.use(OWNERS, _resources())
    routes = MappingProxyType({"listener/8080": "r1"})
    for _ in range(1000):  # a thousand gateway Envoys connecting
        tracker.ack(R, routes)
    assert tracker.recorded == 1
    tracker.nack(R, {"listener/8080": "r1"}, "rejected listener/8080")  # (one of them, anyway)
    assert tracker.conditions()[A].status == "False"
    tracker.ack(R, routes)  # judged again: the latest verdict wins, as with any ACK
    assert tracker.conditions()[A].status == "True" and tracker.recorded == 3


def test_a_shared_selection_acked_again_after_its_verdicts_were_trimmed_is_judged_again():
    """Verdicts of resources that left the compile are trimmed (beyond a bound); one
    that comes back at the same version and is ACKed with the very same mapping must
    be judged again, not skipped as already judged."""
    others = {f"c{i}": "c1" for i in range(300)}
    tracker = ProgrammedTracker()
    tracker.use({(R, "listener/8080"): (A,), **{(C, n): (B,) for n in others}},
                {R: {"listener/8080": EnvoyResource(R, "listener/8080", b"", "r1")},
                 C: {n: EnvoyResource(C, n, b"", v) for n, v in others.items()}})
    routes = MappingProxyType({"listener/8080": "r1"})
    tracker.ack(R, routes)
    tracker.ack(C, others)  # judged after the route table: the route's verdict is the oldest
    tracker.use({(R, "x"): (A,)}, {R: {"x": EnvoyResource(R, "x", b"", "x1")}})  # all of them gone: trimmed
    tracker.use(OWNERS, _resources())
    tracker.ack(C, {"modelserver/default/b": "c1"})
    tracker.ack(R, routes)
    assert tracker.conditions()[A].status == "True"
