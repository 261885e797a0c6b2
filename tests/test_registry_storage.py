"""registry_service storage against a real PostgreSQL: migrations, ids, the transactional
outbox, the check-job queue, optimistic concurrency, pagination, uploads and tokens.

Each test gets its own freshly created database (dropped afterwards), so tests are independent
and may run in any order.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql

from lwdock.embedded_db import scratch_database
from lwdock.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from registry_service.database import Database
from registry_service.migrations import Migration, MigrationError, load_migrations, migrate
from registry_service.repository import (
    CHANGES_CHANNEL,
    ChangeType,
    JobState,
    LearnwareFilter,
    LearnwareRow,
    NewSpecification,
    Order,
    PackageInfo,
    Repository,
    Role,
    State,
)

# ---------------------------------------------------------------------------------------------
# fixtures


@pytest_asyncio.fixture
async def db_url(database_url: str) -> AsyncIterator[str]:
    """A new, empty database on the test server; dropped after the test."""
    with scratch_database(database_url, "lwdock_t") as url:
        yield url


async def open_database(url: str) -> Database:
    db = Database(url, max_size=8)
    await db.pool.open(wait=True, timeout=30)
    await migrate(db.pool)
    return db


@pytest_asyncio.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await open_database(db_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def repo(db: Database) -> Repository:
    return Repository(db.pool)


# ---------------------------------------------------------------------------------------------
# helpers


def sha(value: object) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()


def semantic(
    name: str = "Learnware one",
    *,
    data: str = "Table",
    task: str = "Classification",
    library: str = "Scikit-learn",
    license: str = "MIT",
    scenarios: tuple[str, ...] = ("Business",),
) -> dict[str, Any]:
    return {
        "Data": {"Type": "Class", "Values": [data]},
        "Task": {"Type": "Class", "Values": [task]},
        "Library": {"Type": "Class", "Values": [library]},
        "Scenario": {"Type": "Tag", "Values": list(scenarios)},
        "License": {"Type": "Class", "Values": [license]},
        "Name": {"Type": "String", "Values": name},
        "Description": {"Type": "String", "Values": "A learnware for the tests."},
        "Input": {"Dimension": 3, "Description": {"0": "a"}},
    }


def spec(name: str = "stat_spec.json", dimension: int = 3) -> NewSpecification:
    return NewSpecification(
        name=name,
        type="RKMETableSpecification",
        dimension=dimension,
        spec_json={"type": "RKMETableSpecification", "gamma": 0.1, "z": [[0.5] * dimension]},
    )


async def make(
    repo: Repository,
    key: object = None,
    *,
    owner: str = "users/alice",
    request_id: str | None = None,
    max_check_attempts: int = 3,
    **semantic_kwargs: Any,
) -> LearnwareRow:
    key = uuid.uuid4() if key is None else key
    return await repo.create_learnware(
        owner=owner,
        semantic=semantic(**semantic_kwargs),
        package=PackageInfo(sha(key), 1234),
        specifications=[spec()],
        request_id=request_id,
        max_check_attempts=max_check_attempts,
    )


async def count(db: Database, table: str) -> int:
    async with db.pool.connection() as conn:
        cur = await conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))  # type: ignore[arg-type]
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def all_pages(repo: Repository, **kwargs: Any) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page = await repo.list_learnwares(page_token=token, **kwargs)
        ids += [lw.id for lw in page.items]
        token = page.next_page_token
        if not token:
            return ids


# ---------------------------------------------------------------------------------------------
# migrations


async def test_migrations_apply_once_and_are_idempotent(db_url: str) -> None:
    shipped = load_migrations()
    assert [m.version for m in shipped][:1] == [1]
    assert await migrate(db_url) == [m.version for m in shipped]
    assert await migrate(db_url) == []
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cur = await conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY 1")
        assert await cur.fetchall() == [(m.version, m.checksum) for m in shipped]


async def test_concurrent_migrations_apply_each_version_once(db_url: str) -> None:
    extra = Migration(9001, "extra", "CREATE TABLE extra_table (x integer);")
    wanted = [*load_migrations(), extra]
    results = await asyncio.gather(*(migrate(db_url, wanted) for _ in range(5)))
    applied = sorted(v for result in results for v in result)
    assert applied == sorted(m.version for m in wanted)
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM schema_migrations")
        assert await cur.fetchone() == (len(wanted),)
    # A later release adds a migration; replicas starting together apply it once.
    later = Migration(9002, "later", "ALTER TABLE extra_table ADD COLUMN y text;")
    results = await asyncio.gather(*(migrate(db_url, [*wanted, later]) for _ in range(3)))
    assert sorted(v for result in results for v in result) == [9002]


async def test_changed_migration_is_refused(db_url: str) -> None:
    await migrate(db_url)
    first = load_migrations()[0]
    tampered = Migration(first.version, first.name, first.sql + "\n-- edited\n")
    with pytest.raises(MigrationError):
        await migrate(db_url, [tampered])


# ---------------------------------------------------------------------------------------------
# ids


async def test_ids_come_from_a_sequence_and_are_never_reused(db_url: str) -> None:
    db = await open_database(db_url)
    repo = Repository(db.pool)
    created = [await make(repo, i) for i in range(3)]
    assert [lw.id for lw in created] == ["lw-00000001", "lw-00000002", "lw-00000003"]
    # The reference's bug: delete the newest, restart, add -> the same id again.
    deleted = await repo.delete_learnware(created[-1].id)
    assert deleted.state == State.DELETED and deleted.delete_time is not None
    after_delete = await make(repo, "after-delete")
    assert after_delete.id == "lw-00000004"
    await db.close()

    db = await open_database(db_url)  # a "restart": new pool, migrations re-run
    try:
        repo = Repository(db.pool)
        after_restart = await make(repo, "after-restart")
        assert after_restart.id == "lw-00000005"
        # The deleted id stays reserved and readable for admins.
        still = await repo.get_learnware(created[-1].id, include_deleted=True)
        assert still.state == State.DELETED
        with pytest.raises(NotFound):
            await repo.get_learnware(created[-1].id)
    finally:
        await db.close()


async def test_unknown_ids_are_not_found(repo: Repository) -> None:
    for bad in ("lw-00000099", "nope", "../etc/passwd"):
        with pytest.raises(NotFound):
            await repo.get_learnware(bad)
        with pytest.raises(NotFound):
            await repo.set_state(bad, State.ACTIVE)
    with pytest.raises(NotFound):
        await repo.delete_learnware("lw-00000099")


# ---------------------------------------------------------------------------------------------
# create, read, specifications


async def test_create_writes_everything_in_one_transaction(repo: Repository, db: Database) -> None:
    lw = await make(repo, "one", request_id="req-1")
    assert lw.state == State.PENDING and lw.owner == "users/alice"
    assert lw.package.sha256 == sha("one") and lw.package.size_bytes == 1234
    assert [s.name for s in lw.specifications] == ["stat_spec.json"]
    assert lw.specifications[0].spec_json is None  # summaries only
    assert lw.etag and lw.name == f"learnwares/{lw.id}"

    (event,) = await repo.events_since(0)
    assert event.type == ChangeType.CREATED and event.learnware_id == lw.id
    assert event.learnware() == lw
    job = await repo.latest_check_job(lw.id)
    assert (
        job is not None and job.state == JobState.QUEUED and job.package_sha256 == lw.package.sha256
    )
    upload = await repo.find_upload("req-1")
    assert upload is not None and upload.learnware_id == lw.id and upload.sha256 == sha("one")
    assert await repo.find_upload("req-unknown") is None

    full = await repo.get_specification(lw.id, "stat_spec.json")
    assert full.data()["gamma"] == 0.1 and full.dimension == 3
    with pytest.raises(NotFound):
        await repo.get_specification(lw.id, "other.json")
    assert await repo.get_learnware(lw.id) == lw


async def test_failed_transaction_leaves_no_row_event_or_job(
    repo: Repository, db: Database
) -> None:
    await make(repo, "first")
    tables = ("learnwares", "specifications", "change_events", "check_jobs", "uploads")
    before = {t: await count(db, t) for t in tables}
    # Duplicate package: refused before any write.
    with pytest.raises(AlreadyExists) as info:
        await make(repo, "first", request_id="dup")
    assert info.value.resource_name == "learnwares/lw-00000001"
    # A failure in the middle of the transaction (after the learnware row was inserted): the
    # specification text holds a NUL, which PostgreSQL refuses.
    with pytest.raises(InvalidArgument):
        await repo.create_learnware(
            owner="users/alice",
            semantic=semantic(),
            package=PackageInfo(sha("second"), 10),
            specifications=[NewSpecification("s.json", "RKMETableSpecification", "a\x00b")],
            request_id="broken",
        )
    assert {t: await count(db, t) for t in tables} == before
    assert await repo.find_upload("broken") is None
    # The aborted attempt burned its id number; the next one is never a reused id.
    assert (await make(repo, "third")).id == "lw-00000003"


async def test_duplicate_package_is_already_exists_until_deleted(repo: Repository) -> None:
    first = await make(repo, "pkg")
    with pytest.raises(AlreadyExists):
        await make(repo, "pkg", owner="users/bob")
    racing = await asyncio.gather(*(make(repo, "race") for _ in range(4)), return_exceptions=True)
    assert sum(isinstance(r, LearnwareRow) for r in racing) == 1
    assert sum(isinstance(r, AlreadyExists) for r in racing) == 3
    await repo.delete_learnware(first.id)
    again = await make(repo, "pkg")  # a deleted learnware no longer holds its package
    assert again.id != first.id


async def test_request_id_makes_create_idempotent(repo: Repository, db: Database) -> None:
    first = await make(repo, "idem", request_id="r-1")
    retry = await make(repo, "idem", request_id="r-1")
    assert retry == first
    with pytest.raises(AlreadyExists):
        await make(repo, "different", request_id="r-1")
    racing = await asyncio.gather(*(make(repo, "raced", request_id="r-2") for _ in range(4)))
    assert len({lw.id for lw in racing}) == 1
    assert await count(db, "learnwares") == 2
    assert [e.type for e in await repo.events_since(0)] == [ChangeType.CREATED] * 2


# ---------------------------------------------------------------------------------------------
# change feed


async def test_events_are_ordered_and_complete(repo: Repository) -> None:
    lw = await make(repo)
    lw = await repo.update_semantic(lw.id, semantic("Renamed learnware"), expected_etag=lw.etag)
    lw = await repo.set_state(lw.id, State.ACTIVE)
    lw = await repo.delete_learnware(lw.id)
    events = await repo.events_since(0)
    assert [e.type for e in events] == [
        ChangeType.CREATED,
        ChangeType.UPDATED,
        ChangeType.STATE_CHANGED,
        ChangeType.DELETED,
    ]
    sequences = [e.sequence for e in events]
    assert sequences == sorted(set(sequences))
    assert [e.learnware().state for e in events] == [
        State.PENDING,
        State.PENDING,
        State.ACTIVE,
        State.DELETED,
    ]
    assert events[1].snapshot["semantic"]["Name"]["Values"] == "Renamed learnware"
    assert events[-1].learnware() == lw
    assert await repo.latest_sequence() == sequences[-1]


async def test_events_since_pages_exactly(repo: Repository) -> None:
    for i in range(7):
        await make(repo, i)
    everything = await repo.events_since(0, 1000)
    assert len(everything) == 7
    pages: list[list[int]] = []
    cursor = 0
    while batch := await repo.events_since(cursor, 3):
        pages.append([e.sequence for e in batch])
        cursor = batch[-1].sequence
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [s for p in pages for s in p] == [e.sequence for e in everything]
    assert await repo.events_since(everything[-1].sequence) == []
    with pytest.raises(InvalidArgument):
        await repo.events_since(0, 0)


async def test_events_carry_the_specifications_of_their_package(repo: Repository) -> None:
    lw = await make(repo, "v1")
    lw = await repo.replace_package(
        lw.id,
        PackageInfo(sha("v2"), 99),
        [spec("v2_spec.json", dimension=5)],
        expected_etag=lw.etag,
    )
    assert lw.package.sha256 == sha("v2") and lw.state == State.PENDING
    assert [s.name for s in lw.specifications] == ["v2_spec.json"]
    created, replaced = await repo.events_since(0, with_specifications=True)
    assert [s.name for s in created.specifications] == ["stat_spec.json"]
    assert [s.name for s in replaced.specifications] == ["v2_spec.json"]
    assert replaced.specifications[0].data()["z"] == [[0.5] * 5]
    assert [s.name for s in await repo.get_specifications(lw.id)] == ["v2_spec.json"]


async def test_concurrent_writers_publish_in_sequence_order(repo: Repository) -> None:
    """A follower that always continues after the highest sequence it has seen must not
    miss an event that commits late with a smaller sequence."""
    seen: list[int] = []
    done = asyncio.Event()

    async def follow() -> None:
        cursor = 0
        while not done.is_set():
            for event in await repo.events_since(cursor, 1000):
                seen.append(event.sequence)
                cursor = event.sequence
            await asyncio.sleep(0)

    follower = asyncio.create_task(follow())
    created = await asyncio.gather(*(make(repo, i) for i in range(30)))
    await asyncio.gather(*(repo.set_state(lw.id, State.ACTIVE) for lw in created))
    done.set()
    await follower
    tail = await repo.events_since(seen[-1] if seen else 0, 1000)
    final = await repo.events_since(0, 1000)
    assert len(final) == 60
    assert seen + [e.sequence for e in tail] == [e.sequence for e in final]


async def test_notify_is_sent_at_commit(repo: Repository, db_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {CHANGES_CHANNEL}")
        await make(repo)
        sequence = await repo.latest_sequence()
        received = [n.payload async for n in listener.notifies(timeout=5, stop_after=1)]
        assert received == [str(sequence)]


async def test_watch_replays_then_follows(repo: Repository) -> None:
    first = await make(repo, "w1")
    stream = repo.watch(0, poll_interval_s=60)
    try:
        event = await asyncio.wait_for(anext(stream), 10)
        assert event.learnware_id == first.id
        # Only NOTIFY can wake the watcher this fast (its poll interval is 60 s).
        second = await make(repo, "w2")
        event = await asyncio.wait_for(anext(stream), 10)
        assert event.learnware_id == second.id and event.type == ChangeType.CREATED
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_watch_marks_the_end_of_the_replay_once(repo: Repository) -> None:
    """With mark_caught_up, one None follows the replay, after every event committed before
    it (here across several batches), and never again; new events follow it."""
    since = await repo.latest_sequence()
    made = [await make(repo, f"m{i}") for i in range(5)]
    stream = repo.watch(since, batch_size=2, poll_interval_s=60, mark_caught_up=True)
    try:
        replay = []
        while (event := await asyncio.wait_for(anext(stream), 10)) is not None:
            replay.append(event)
        assert [e.learnware_id for e in replay] == [lw.id for lw in made]
        later = await make(repo, "after")
        event = await asyncio.wait_for(anext(stream), 10)
        assert event is not None and event.learnware_id == later.id
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# etags and updates


async def test_stale_etag_is_aborted(repo: Repository) -> None:
    lw = await make(repo)
    updated = await repo.update_semantic(lw.id, semantic("Second name"), expected_etag=lw.etag)
    assert updated.etag != lw.etag and updated.update_time >= lw.update_time
    with pytest.raises(Aborted):
        await repo.update_semantic(lw.id, semantic("Third name"), expected_etag=lw.etag)
    with pytest.raises(Aborted):
        await repo.set_state(lw.id, State.ACTIVE, expected_etag=lw.etag)
    with pytest.raises(Aborted):
        await repo.delete_learnware(lw.id, expected_etag=lw.etag)
    assert (await repo.get_learnware(lw.id)).semantic["Name"]["Values"] == "Second name"
    # Two writers with the same etag: exactly one wins.
    racing = await asyncio.gather(
        *(
            repo.update_semantic(lw.id, semantic(f"Racer {i}"), expected_etag=updated.etag)
            for i in range(4)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, LearnwareRow) for r in racing) == 1
    assert sum(isinstance(r, Aborted) for r in racing) == 3


async def test_recheck_flag_requeues_and_checking_blocks_updates(repo: Repository) -> None:
    lw = await make(repo)
    first_job = await repo.latest_check_job(lw.id)
    assert first_job is not None
    lw = await repo.update_semantic(lw.id, semantic("Only the name"))
    assert lw.state == State.PENDING
    assert (await repo.latest_check_job(lw.id)) == first_job  # no new check for a rename

    lw = await repo.set_state(lw.id, State.ACTIVE)
    lw = await repo.update_semantic(lw.id, semantic(data="Image"), recheck=True)
    assert lw.state == State.PENDING
    assert (await repo.get_check_job(first_job.id)).state == JobState.CANCELLED
    new_job = await repo.latest_check_job(lw.id)
    assert new_job is not None and new_job.id != first_job.id
    assert new_job.state == JobState.QUEUED

    claimed = await repo.claim_check_job("w", 60)
    assert claimed is not None and claimed.id == new_job.id
    with pytest.raises(FailedPrecondition):
        await repo.update_semantic(lw.id, semantic("While checking"))
    with pytest.raises(FailedPrecondition):
        await repo.set_state(lw.id, State.ACTIVE, from_states=frozenset({State.PENDING}))


# ---------------------------------------------------------------------------------------------
# check jobs


async def test_concurrent_workers_never_share_a_job(repo: Repository, db_url: str) -> None:
    created = [await make(repo, i) for i in range(12)]
    other = await open_database(db_url)  # a second replica with its own pool
    try:
        replicas = [repo, Repository(other.pool)]

        async def worker(index: int) -> list[int]:
            mine: list[int] = []
            while (job := await replicas[index % 2].claim_check_job(f"w{index}", 60)) is not None:
                mine.append(job.id)
            return mine

        results = await asyncio.gather(*(worker(i) for i in range(6)))
    finally:
        await other.close()
    claimed = [job_id for result in results for job_id in result]
    assert len(claimed) == len(set(claimed)) == 12
    for lw in created:
        assert (await repo.get_learnware(lw.id)).state == State.CHECKING


async def test_check_results_set_the_state(repo: Repository) -> None:
    good, bad = await make(repo, "good"), await make(repo, "bad")
    jobs = {}
    for _ in range(2):
        job = await repo.claim_check_job("worker", 60)
        assert job is not None and job.state == JobState.RUNNING and job.attempts == 1
        jobs[job.learnware_id] = job
    assert await repo.claim_check_job("worker", 60) is None
    await repo.finish_check_job(jobs[good.id].id, "worker", passed=True, log="fine")
    failed = await repo.finish_check_job(
        jobs[bad.id].id, "worker", passed=False, reason="output shape (2,) != (3,)", log="x" * 10
    )
    assert failed.state == JobState.DONE and failed.passed is False and failed.end_time
    assert (await repo.get_learnware(good.id)).state == State.ACTIVE
    rejected = await repo.get_learnware(bad.id)
    assert rejected.state == State.REJECTED
    assert rejected.state_reason == "output shape (2,) != (3,)"
    report = await repo.latest_check_job(bad.id, finished_only=True)
    assert report is not None and report.reason == rejected.state_reason
    events = [(e.learnware_id, e.type, e.snapshot["state"]) for e in await repo.events_since(0)]
    assert (good.id, ChangeType.STATE_CHANGED, "CHECKING") in events
    assert (good.id, ChangeType.STATE_CHANGED, "ACTIVE") in events
    assert (bad.id, ChangeType.STATE_CHANGED, "REJECTED") in events
    with pytest.raises(Aborted):  # already finished
        await repo.finish_check_job(jobs[good.id].id, "worker", passed=True)
    with pytest.raises(NotFound):
        await repo.finish_check_job(123456, "worker", passed=True)


async def test_expired_lease_is_reclaimed(repo: Repository) -> None:
    lw = await make(repo)
    job = await repo.claim_check_job("crashed", lease_seconds=0.2)
    assert job is not None
    assert await repo.claim_check_job("other", 60) is None  # lease still held
    await asyncio.sleep(0.4)
    again = await repo.claim_check_job("other", 60)
    assert again is not None and again.id == job.id
    assert again.attempts == 2 and again.locked_by == "other"
    with pytest.raises(Aborted):  # the first worker lost its lease
        await repo.finish_check_job(job.id, "crashed", passed=False, reason="late")
    await repo.finish_check_job(job.id, "other", passed=True)
    assert (await repo.get_learnware(lw.id)).state == State.ACTIVE


async def test_failed_runs_retry_then_reject(repo: Repository) -> None:
    lw = await make(repo, max_check_attempts=2)
    job = await repo.claim_check_job("w", 60)
    assert job is not None
    retried = await repo.fail_check_job(job.id, "w", "sandbox died", retry_delay_s=0)
    assert retried.state == JobState.QUEUED and retried.last_error == "sandbox died"
    assert (await repo.get_learnware(lw.id)).state == State.PENDING
    job = await repo.claim_check_job("w", 60)
    assert job is not None and job.attempts == 2
    failed = await repo.fail_check_job(job.id, "w", "sandbox died again")
    assert failed.state == JobState.FAILED
    rejected = await repo.get_learnware(lw.id)
    assert rejected.state == State.REJECTED and "sandbox died again" in rejected.state_reason
    assert await repo.claim_check_job("w", 60) is None


async def test_janitor_requeues_or_fails_expired_leases(repo: Repository) -> None:
    retry = await make(repo, "retry", max_check_attempts=3)
    give_up = await make(repo, "give-up", max_check_attempts=1)
    for _ in range(2):
        assert await repo.claim_check_job("dead", lease_seconds=0.1) is not None
    await asyncio.sleep(0.3)
    assert await repo.requeue_expired_check_jobs() == 2
    assert (await repo.get_learnware(retry.id)).state == State.PENDING
    assert (await repo.get_learnware(give_up.id)).state == State.REJECTED
    job = await repo.claim_check_job("alive", 60)
    assert job is not None and job.learnware_id == retry.id


async def test_deleted_or_replaced_learnwares_are_not_checked(repo: Repository) -> None:
    deleted = await make(repo, "deleted")
    await repo.delete_learnware(deleted.id)
    replaced = await make(repo, "replaced")
    await repo.replace_package(replaced.id, PackageInfo(sha("replaced-2"), 5), [spec()])
    job = await repo.claim_check_job("w", 60)
    assert job is not None
    assert job.learnware_id == replaced.id and job.package_sha256 == sha("replaced-2")
    assert await repo.claim_check_job("w", 60) is None


# ---------------------------------------------------------------------------------------------
# listing


async def test_pagination_is_stable_across_inserts(repo: Repository) -> None:
    original = [await make(repo, i) for i in range(10)]
    newest_first = [lw.id for lw in reversed(original)]

    page = await repo.list_learnwares(page_size=4)
    assert page.total_size == 10 and [lw.id for lw in page.items] == newest_first[:4]
    ids = [lw.id for lw in page.items]
    token = page.next_page_token
    inserted = [await make(repo, f"new-{i}") for i in range(5)]
    while token:
        page = await repo.list_learnwares(page_size=4, page_token=token)
        assert page.total_size == 15
        ids += [lw.id for lw in page.items]
        token = page.next_page_token
    assert ids == newest_first  # nothing repeated, nothing skipped

    oldest_first = await all_pages(repo, order=Order.CREATE_TIME, page_size=3)
    assert oldest_first == [lw.id for lw in original + inserted]


async def test_list_filters_and_orders(repo: Repository) -> None:
    a = await make(repo, "a", name="Bravo table", owner="users/alice")
    b = await make(repo, "b", name="Alpha images", data="Image", owner="users/bob")
    c = await make(
        repo, "c", name="Charlie text", data="Text", license="Apache-2.0", scenarios=("Health",)
    )
    d = await make(repo, "d", name="Delta 100%_done", library="PyTorch", task="Regression")
    await repo.set_state(a.id, State.ACTIVE)
    await repo.delete_learnware(d.id)

    async def ids(flt: LearnwareFilter, order: Order = Order.NAME) -> list[str]:
        return await all_pages(repo, filter=flt, order=order, page_size=2)

    assert await ids(LearnwareFilter()) == [b.id, a.id, c.id]
    assert await ids(LearnwareFilter(), Order.NAME_DESC) == [c.id, a.id, b.id]
    assert await ids(LearnwareFilter(show_deleted=True)) == [b.id, a.id, c.id, d.id]
    assert await ids(LearnwareFilter(states=frozenset({State.ACTIVE}))) == [a.id]
    assert await ids(LearnwareFilter(states=frozenset({State.DELETED}))) == [d.id]
    assert await ids(LearnwareFilter(owner="users/bob")) == [b.id]
    assert await ids(LearnwareFilter(data_type="Image")) == [b.id]
    assert await ids(LearnwareFilter(license="Apache-2.0")) == [c.id]
    assert await ids(LearnwareFilter(scenarios=("Health",))) == [c.id]
    assert await ids(LearnwareFilter(scenarios=("Health", "Business"))) == []
    assert await ids(LearnwareFilter(task="Classification", library="Scikit-learn")) == [
        b.id,
        a.id,
        c.id,
    ]
    assert await ids(LearnwareFilter(library="PyTorch", show_deleted=True)) == [d.id]
    assert await ids(LearnwareFilter(name_contains="ALPHA")) == [b.id]
    assert await ids(LearnwareFilter(name_contains="100%_", show_deleted=True)) == [d.id]
    assert await ids(LearnwareFilter(name_contains="%")) == []
    assert await ids(LearnwareFilter(ids=(a.id, c.id))) == [a.id, c.id]
    page = await repo.list_learnwares(LearnwareFilter(data_type="Table"), page_size=1)
    assert page.total_size == 1 and page.next_page_token == ""


async def test_page_tokens_are_validated(repo: Repository) -> None:
    for i in range(3):
        await make(repo, i)
    page = await repo.list_learnwares(page_size=1)
    with pytest.raises(InvalidArgument):  # another filter
        await repo.list_learnwares(
            LearnwareFilter(owner="users/alice"), page_size=1, page_token=page.next_page_token
        )
    with pytest.raises(InvalidArgument):  # another order
        await repo.list_learnwares(order=Order.NAME, page_size=1, page_token=page.next_page_token)
    for garbage in ("!!!", "eyJ2IjoxfQ", "bm90IGpzb24"):
        with pytest.raises(InvalidArgument):
            await repo.list_learnwares(page_token=garbage)
    with pytest.raises(InvalidArgument):
        await repo.list_learnwares(page_size=-1)
    assert Order.parse("") == Order.CREATE_TIME_DESC
    assert Order.parse("create_time  ASC") == Order.CREATE_TIME
    assert Order.parse("Name desc") == Order.NAME_DESC
    with pytest.raises(InvalidArgument):
        Order.parse("owner")


# ---------------------------------------------------------------------------------------------
# tokens, blobs, unavailability


async def test_tokens(repo: Repository) -> None:
    alice = await repo.create_token(
        principal="users/alice", role=Role.DEVELOPER, token_sha256=sha("secret-a")
    )
    assert alice.id == "tk-00000001" and alice.name == "tokens/tk-00000001"
    expired = await repo.create_token(
        principal="users/bob",
        role=Role.READER,
        token_sha256=sha("secret-b"),
        display_name="old",
        expire_time=datetime.now(UTC) - timedelta(seconds=1),
    )
    with pytest.raises(AlreadyExists):
        await repo.create_token(principal="users/x", role=Role.ADMIN, token_sha256=sha("secret-a"))
    assert await repo.find_token_by_sha256(sha("secret-a")) == alice
    assert await repo.find_token_by_sha256(sha("secret-b")) is None
    assert await repo.find_token_by_sha256(sha("secret-b"), active_only=False) == expired
    assert await repo.get_token(alice.id) == alice

    extra = [
        await repo.create_token(principal="users/alice", role=Role.READER, token_sha256=sha(i))
        for i in range(3)
    ]
    page = await repo.list_tokens(principal="users/alice", page_size=2)
    assert page.total_size == 4 and [t.id for t in page.items] == [alice.id, extra[0].id]
    page = await repo.list_tokens(
        principal="users/alice", page_size=2, page_token=page.next_page_token
    )
    assert [t.id for t in page.items] == [extra[1].id, extra[2].id] and not page.next_page_token

    revoked = await repo.revoke_token(alice.id)
    assert revoked.revoked and revoked.revoke_time is not None
    assert (await repo.revoke_token(alice.id)).revoke_time == revoked.revoke_time
    assert await repo.find_token_by_sha256(sha("secret-a")) is None
    assert alice.id not in [t.id for t in (await repo.list_tokens()).items]
    assert alice.id in [t.id for t in (await repo.list_tokens(include_revoked=True)).items]
    with pytest.raises(NotFound):
        await repo.revoke_token("tk-00009999")
    with pytest.raises(NotFound):
        await repo.get_token("nope")


async def test_referenced_packages(repo: Repository) -> None:
    live, gone = await make(repo, "live"), await make(repo, "gone")
    await repo.delete_learnware(gone.id)
    assert await repo.referenced_packages() == {live.package.sha256}
    assert await repo.referenced_packages(include_deleted=True) == {
        live.package.sha256,
        gone.package.sha256,
    }


async def test_unreachable_database_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = Database(f"host=127.0.0.1 port={port} dbname=x user=x connect_timeout=1")
    await db.open()
    try:
        repo = Repository(db.pool, connect_timeout_s=0.5)
        with pytest.raises(Unavailable):
            await repo.get_learnware("lw-00000001")
        with pytest.raises(Unavailable):
            await make(repo)
    finally:
        await db.close()
