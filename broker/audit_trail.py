"""Reading the audit trail from Kafka and verifying its hash chains (what ``action-broker
audit verify`` runs): the Kafka side of the pure checks in :mod:`broker.audit`.

The router writes each chain to one partition of the audit topic (broker.feed_writer), so
partitions verify independently: each worker process reads its share of the partitions
through librdkafka, up to each partition's last stable offset, and checks the entries as
they come (:class:`broker.audit.ChainVerifier`, nothing held but each chain's head). The
reports are merged. Verifying is CPU work (a JSON parse and a SHA-256 over the canonical
JSON per entry), so on two cores two workers take half the time; workers are spawned,
never forked, as the router's are.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from multiprocessing.sharedctypes import Synchronized

from broker.audit import ChainHead, ChainReport, ChainVerifier
from broker.connection import KafkaConnection
from broker.errors import ActionError, KafkaUnreachableError
from broker.ledger_follower import stable_bounds

_LIST_TIMEOUT_S = 10.0
_IDLE_TIMEOUT_S = 30.0  # no record for this long while short of the end: give up
_BATCH = 10_000
_PROGRESS_EVERY_S = 0.2


def audit_partitions(kafka: KafkaConnection, topic: str) -> list[int]:
    """The partitions of the audit topic; an error naming what to do when it is missing."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient(kafka.librdkafka_config())
        listed = admin.list_topics(topic, timeout=_LIST_TIMEOUT_S)
    except KafkaException as exc:
        raise KafkaUnreachableError(
            f"cannot read the topics of Kafka at {kafka.bootstrap}: {exc.args[0]}",
            hint="is it running, and are these the operator's credentials?",
        ) from None
    found = listed.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise ActionError(
            f"topic {topic} not found at {kafka.bootstrap}",
            hint="run action-broker provision, or pass the audit topic with --topic",
        )
    return sorted(found.partitions)


def verify_partitions(
    kafka: KafkaConnection,
    topic: str,
    group: str,
    partitions: list[int],
    read: Callable[[int], None],
    note: Mapping[str, int] | None = None,
) -> ChainReport:
    """Read ``partitions`` of the audit topic in order up to their last stable offsets
    and verify every entry as it comes; ``read(n)`` is told of each batch of n entries.
    An unreadable entry is checked as an empty one, so the report names it; ``note``:
    see :class:`broker.audit.ChainVerifier`."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    config = kafka.librdkafka_config()
    # Assigned, never subscribed and never committing: librdkafka requires a group id.
    reader = Consumer(
        config
        | {
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    verifier = ChainVerifier(note)
    try:
        bounds = stable_bounds(
            AdminClient(config), [(topic, p) for p in partitions], _LIST_TIMEOUT_S
        )
        for (_, partition), (first, end) in bounds.items():
            if end <= first:
                continue
            reader.assign([TopicPartition(topic, partition, first)])
            where = [TopicPartition(topic, partition)]
            idle_since = time.monotonic()
            # The position, not the last record's offset: a transaction's commit marker
            # takes the last offset before the end, and is never delivered.
            while reader.position(where)[0].offset < end:
                batch = reader.consume(num_messages=_BATCH, timeout=0.1)
                if not batch:
                    if time.monotonic() - idle_since > _IDLE_TIMEOUT_S:
                        raise ActionError(
                            f"reading the audit trail stalled at {topic}/{partition} for "
                            f"{_IDLE_TIMEOUT_S:.0f} s, short of its end (offset {end})",
                            hint="is a node of the cluster down? try again when it is back",
                        )
                    continue
                idle_since = time.monotonic()
                checked = 0
                for message in batch:
                    offset = message.offset()
                    if message.error() is not None or offset is None or offset >= end:
                        continue  # past the end this run verifies
                    try:
                        entry = json.loads(message.value() or b"")
                    except (ValueError, TypeError):
                        entry = {}
                    verifier.add(f"{topic}/{partition}@{offset}", entry)
                    checked += 1
                read(checked)
    finally:
        reader.close()
    return verifier.report()


# A worker's count of the entries it has read, shared with the parent for its progress.
_read_counter: Synchronized[int] | None = None


def _init_worker(counter: Synchronized[int]) -> None:
    global _read_counter
    _read_counter = counter


def _count(n: int) -> None:
    assert _read_counter is not None
    with _read_counter.get_lock():
        _read_counter.value += n


def _verify_in_worker(
    kafka: KafkaConnection,
    topic: str,
    group: str,
    partitions: list[int],
    note: Mapping[str, int],
) -> ChainReport:
    return verify_partitions(kafka, topic, group, partitions, _count, note)


def verify_trail(
    kafka: KafkaConnection,
    topic: str,
    group: str,
    done: Callable[[int], None],
    workers: int | None = None,
) -> ChainReport:
    """Verify every partition of the audit topic, in ``workers`` processes (default: one
    per core, at most one per partition), and each chain's end against the head the
    router committed; ``done`` is told how many entries have been read so far, a few
    times a second.

    The committed heads are read first: the entries of a head commit in its
    transaction, so the trail read afterwards holds them all, and a router still at work
    adds entries beyond the heads rather than seeming to have lost some."""
    committed = committed_heads(kafka, group)
    note = {chain: head.seq for chain, head in committed.items()}
    report = _verify_partitions(kafka, topic, group, done, workers, note)
    report.check_committed(committed)
    return report


def _verify_partitions(
    kafka: KafkaConnection,
    topic: str,
    group: str,
    done: Callable[[int], None],
    workers: int | None,
    note: Mapping[str, int],
) -> ChainReport:
    partitions = audit_partitions(kafka, topic)
    workers = max(1, min(workers or os.cpu_count() or 1, len(partitions)))
    if workers == 1:
        total = 0

        def read(n: int) -> None:
            nonlocal total
            total += n
            done(total)

        return verify_partitions(kafka, topic, group, partitions, read, note)
    context = multiprocessing.get_context("spawn")
    counter: Synchronized[int] = context.Value("q", 0)
    shares = [partitions[i::workers] for i in range(workers)]
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(counter,)
    ) as pool:
        futures = [
            pool.submit(_verify_in_worker, kafka, topic, group, share, note) for share in shares
        ]
        while not all(f.done() for f in futures):
            concurrent.futures.wait(futures, timeout=_PROGRESS_EVERY_S)
            done(counter.value)
        return ChainReport.merged([f.result() for f in futures])


def committed_heads(kafka: KafkaConnection, group: str) -> dict[str, ChainHead]:
    """The chain heads the router committed as offset metadata, per inbound partition."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**kafka.client_config(), client_id="action-audit-verify")
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    heads = {}
    for tp, committed in offsets.items():
        chain = f"{tp.topic}/{tp.partition}"
        heads[chain] = ChainHead.from_metadata(chain, committed.metadata)
    return heads
