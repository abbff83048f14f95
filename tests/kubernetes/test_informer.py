"""Informer against the fake API: ordered events, watch resumption without re-list,
re-list on 410 Gone with the missed changes delivered, bookmarks, backoff, resync."""

from __future__ import annotations

import asyncio

from controller.kubernetes.client import KubeClient
from controller.kubernetes.informer import Change, Informer
from kit.backoff import Backoff
from controller.kubernetes.resources import MODEL_ROUTE
from tests.kubernetes.fakeapi import FakeKubeApi
from tests.kubernetes.helpers import eventually, route, running
from tests.support import free_port


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, str, str]] = []

    async def __call__(self, change: Change) -> None:
        self.changes.append((change.type, change.object["metadata"]["name"],
                             change.object.get("spec", {}).get("path", "")))


async def test_list_then_watch_delivers_changes_in_order(api: KubeClient, fake_api: FakeKubeApi) -> None:
    fake_api.seed(route("r1"))
    seen = Recorder()
    informer = Informer(api, MODEL_ROUTE, seen)
    async with running(informer.run()):
        await asyncio.wait_for(informer.synced.wait(), 5)
        await api.patch(MODEL_ROUTE, "default", "r1", {"spec": {"path": "/v1/b"}})
        await api.create(MODEL_ROUTE, route("r2"))
        await api.delete(MODEL_ROUTE, "default", "r1")
        await eventually(lambda: len(seen.changes) == 4, what="four changes")
    assert seen.changes == [("ADDED", "r1", "/v1/a"), ("MODIFIED", "r1", "/v1/b"),
                            ("ADDED", "r2", "/v1/a"), ("DELETED", "r1", "/v1/b")]
    assert list(informer.cache) == [("default", "r2")]
    assert informer.resource_version == fake_api.resource_version  # the DELETED event's


async def test_ended_watch_resumes_from_last_version_without_relist(api: KubeClient, fake_api: FakeKubeApi) -> None:
    seen = Recorder()
    informer = Informer(api, MODEL_ROUTE, seen)
    async with running(informer.run()):
        await asyncio.wait_for(informer.synced.wait(), 5)
        await eventually(lambda: fake_api.watch_count == 1, what="the watch")
        fake_api.close_watches()
        fake_api.seed(route("while-away"))  # made between two watch streams
        await eventually(lambda: len(seen.changes) == 1, what="the change made between watches")
        await eventually(lambda: fake_api.watch_count == 1, what="the resumed watch")
    assert seen.changes == [("ADDED", "while-away", "/v1/a")]
    assert informer.lists == 1


async def test_gone_relists_and_reports_what_was_missed(api: KubeClient, fake_api: FakeKubeApi) -> None:
    fake_api.seed(route("stays"))
    fake_api.seed(route("deleted-while-away"))
    fake_api.seed(route("changed-while-away"))
    seen = Recorder()
    informer = Informer(api, MODEL_ROUTE, seen)
    async with running(informer.run()):
        await asyncio.wait_for(informer.synced.wait(), 5)
        await eventually(lambda: fake_api.watch_count == 1, what="the watch")
        seen.changes.clear()
        # The watch ends, then everything since is compacted away: resuming gets 410.
        fake_api.close_watches()
        fake_api.remove(MODEL_ROUTE, "default", "deleted-while-away")
        fake_api.write(MODEL_ROUTE, "default", "changed-while-away", lambda o: o["spec"].update(path="/v1/new"))
        fake_api.seed(route("added-while-away"))
        fake_api.compact()
        await eventually(lambda: informer.lists == 2 and len(seen.changes) == 3, what="the re-list")
    assert sorted(seen.changes) == [("ADDED", "added-while-away", "/v1/a"),
                                    ("DELETED", "deleted-while-away", "/v1/a"),
                                    ("MODIFIED", "changed-while-away", "/v1/new")]
    assert sorted(n for _, n in informer.cache) == ["added-while-away", "changed-while-away", "stays"]


async def test_bookmark_advances_resource_version(api: KubeClient, fake_api: FakeKubeApi) -> None:
    informer = Informer(api, MODEL_ROUTE)
    async with running(informer.run()):
        await asyncio.wait_for(informer.synced.wait(), 5)
        await eventually(lambda: fake_api.watch_count == 1, what="the watch")
        listed_at = informer.resource_version
        other = fake_api.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}})
        fake_api.bookmark()
        await eventually(lambda: informer.resource_version != listed_at, what="the bookmark")
    assert informer.resource_version == other["metadata"]["resourceVersion"]
    assert informer.cache == {}


async def test_failures_back_off_exponentially() -> None:
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    async with KubeClient(f"http://127.0.0.1:{free_port()}", request_timeout=2) as dead:
        informer = Informer(dead, MODEL_ROUTE, backoff=Backoff(initial=0.5, factor=2, maximum=3),
                            sleep=fake_sleep, resync_period=None)
        async with running(informer.run()):
            await eventually(lambda: len(delays) >= 5, what="five retries")
    assert delays[:5] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert not informer.synced.is_set()


async def test_resync_hands_every_cached_object_to_the_handler(api: KubeClient, fake_api: FakeKubeApi) -> None:
    fake_api.seed(route("a"))
    fake_api.seed(route("b"))
    ticks = asyncio.Queue[None]()

    async def controlled_sleep(_seconds: float) -> None:
        await ticks.get()

    seen = Recorder()
    informer = Informer(api, MODEL_ROUTE, seen, resync_period=60, sleep=controlled_sleep)
    async with running(informer.run()):
        await eventually(lambda: len(seen.changes) == 2, what="the initial list")
        ticks.put_nowait(None)
        await eventually(lambda: len(seen.changes) == 4, what="the resync")
    assert sorted(seen.changes[2:]) == [("RESYNC", "a", "/v1/a"), ("RESYNC", "b", "/v1/a")]


async def test_handler_errors_do_not_stop_the_informer(api: KubeClient, fake_api: FakeKubeApi) -> None:
    seen = Recorder()

    async def flaky(change: Change) -> None:
        if change.object["metadata"]["name"] == "bad":
            raise RuntimeError("handler bug")
        await seen(change)

    informer = Informer(api, MODEL_ROUTE, flaky)
    async with running(informer.run()):
        await asyncio.wait_for(informer.synced.wait(), 5)
        await api.create(MODEL_ROUTE, route("bad"))
        await api.create(MODEL_ROUTE, route("good"))
        await eventually(lambda: seen.changes == [("ADDED", "good", "/v1/a")], what="the next event")


async def test_bounded_history_expires_a_lagging_watch() -> None:
    """With etcd-like compaction (only the last 2 events kept), an informer whose watch
    ended while 3 changes happened re-lists instead of missing one."""
    server = FakeKubeApi(history=2)
    await server.start()
    try:
        async with KubeClient(server.url, request_timeout=5) as client:
            seen = Recorder()
            informer = Informer(client, MODEL_ROUTE, seen)
            async with running(informer.run()):
                await asyncio.wait_for(informer.synced.wait(), 5)
                await eventually(lambda: server.watch_count == 1, what="the watch")
                server.close_watches()
                for name in ("a", "b", "c"):
                    server.seed(route(name))
                await eventually(lambda: len(seen.changes) == 3, what="all three changes")
            assert informer.lists == 2
            assert sorted(seen.changes) == [("ADDED", n, "/v1/a") for n in ("a", "b", "c")]
    finally:
        await server.stop()


async def test_watches_ending_at_once_back_off_instead_of_spinning(api: KubeClient) -> None:
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    # timeoutSeconds=0: the fake ends every watch stream at once, without an event.
    informer = Informer(api, MODEL_ROUTE, watch_timeout=0, sleep=fake_sleep, resync_period=None,
                        backoff=Backoff(initial=0.5, factor=2, maximum=4))
    async with running(informer.run()):
        await eventually(lambda: len(delays) >= 4, what="four empty watches")
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0] and informer.lists == 1


async def test_keep_caches_only_what_it_accepts_and_an_object_leaving_it_is_deleted(
        api: KubeClient, fake_api: FakeKubeApi) -> None:
    fake_api.seed(route("kept", path="/v1/keep"))
    fake_api.seed(route("dropped", path="/v1/other"))
    seen = Recorder()
    informer = Informer(api, MODEL_ROUTE, seen, keep=lambda o: o["spec"]["path"].startswith("/v1/keep"))
    async with running(informer.run()):
        await asyncio.wait_for(informer.synced.wait(), 5)
        await api.patch(MODEL_ROUTE, "default", "dropped", {"spec": {"path": "/v1/still-other"}})
        await api.patch(MODEL_ROUTE, "default", "kept", {"spec": {"path": "/v1/elsewhere"}})
        await api.delete(MODEL_ROUTE, "default", "dropped")
        await api.create(MODEL_ROUTE, route("new", path="/v1/keep/new"))
        await eventually(lambda: len(seen.changes) == 3, what="three changes")
    assert seen.changes == [("ADDED", "kept", "/v1/keep"), ("DELETED", "kept", "/v1/elsewhere"),
                            ("ADDED", "new", "/v1/keep/new")]
    assert list(informer.cache) == [("default", "new")]


async def test_attempted_is_set_by_a_failed_first_list_too(api: KubeClient, fake_api: FakeKubeApi) -> None:
    fake_api.forbid(MODEL_ROUTE)

    async def sleep(seconds: float) -> None:  # the backoff: long enough to look at the first failure
        await asyncio.sleep(3600)

    informer = Informer(api, MODEL_ROUTE, Recorder(), sleep=sleep)
    async with running(informer.run()):
        await asyncio.wait_for(informer.attempted.wait(), 5)
        assert not informer.synced.is_set() and informer.failures == 1


async def test_a_subscriber_gets_the_cache_then_every_change_until_it_stops(api: KubeClient,
                                                                            fake_api: FakeKubeApi) -> None:
    """A shared informer: the owner's handler first, then each subscriber; a subscriber
    that yields while the cache is handed over still sees the changes made meanwhile."""
    fake_api.seed(route("a"))
    fake_api.seed(route("b"))
    owner, late = Recorder(), Recorder()
    informer = Informer(api, MODEL_ROUTE, owner)
    async with running(informer.run()):
        await asyncio.wait_for(informer.synced.wait(), 5)

        async def slow(change: Change) -> None:  # yields on every object handed over
            await late(change)
            if change.type == "ADDED" and change.object["metadata"]["name"] == "a":
                await api.patch(MODEL_ROUTE, "default", "b", {"spec": {"path": "/v1/b"}})
                await api.create(MODEL_ROUTE, route("d"))
                await eventually(lambda: informer.get("default", "b")["spec"]["path"] == "/v1/b"
                                 and informer.get("default", "d") is not None, what="the changes meanwhile")

        stop = await informer.subscribe(slow)
        assert late.changes[0] == ("ADDED", "a", "/v1/a")
        # Neither b's change nor d's arrival is missed (b may be seen twice).
        assert ("ADDED", "d", "/v1/a") in late.changes
        assert [c for c in late.changes if c[1] == "b"][-1] == ("ADDED", "b", "/v1/b")
        await api.create(MODEL_ROUTE, route("c"))
        await eventually(lambda: late.changes[-1] == ("ADDED", "c", "/v1/a"), what="a change after")
        stop()
        await api.delete(MODEL_ROUTE, "default", "c")
        await eventually(lambda: owner.changes[-1] == ("DELETED", "c", "/v1/a"), what="the owner's event")
    assert late.changes[-1] == ("ADDED", "c", "/v1/a")
    assert owner.changes[:2] == [("ADDED", "a", "/v1/a"), ("ADDED", "b", "/v1/a")]
