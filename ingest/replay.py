"""Replay dead letters once their cause is fixed (a device registered, a quantity added, a bug fixed).

A decode-stage letter goes through the pipeline again with the current registry and settings, with
its original receipt time, so readings without device time land exactly where they would have. A
write-stage letter (a line InfluxDB refused) is posted again as it is. A letter that fails again
stays pending with its new reason; good readings of a partly bad message are written either way
(idempotently). Everything goes through the ``Writer``, like the worker's batches: each store's lines
to its database, bisection of refused lines (new write-stage letters), retries, and the spool
(``<data_dir>/replay/spool``) when InfluxDB stays away; a letter is marked replayed only once what it
became is durable.
"""

from __future__ import annotations

from dataclasses import dataclass

from datacharter.charter import Charter
from ingest.pipeline import Pipeline
from ingest.worker import STORES, ensure_databases
from smartzone.errors import InfluxError
from smartzone.model import Store
from smartzone.settings import Settings
from storage.databases import databases
from storage.deadletters import DeadLetterStore
from storage.influx import Influx
from storage.spool import Spool
from storage.writer import REJECTED, Writer


@dataclass
class ReplayResult:
    replayed: int = 0
    still_failing: int = 0
    lines_written: int = 0


def replay_writer(settings: Settings, influx: Influx, store: DeadLetterStore, charter: Charter) -> Writer:
    """The writer replay uses: the ingest stores' databases, its own spool."""
    return Writer(
        influx,
        databases(settings),
        Spool(settings.data_dir / "replay" / "spool"),
        store,
        spool_after=settings.ingest.spool_after,
        max_buffer_bytes=settings.ingest.max_buffer_bytes,
        ensure_databases=lambda: ensure_databases(influx, settings, charter),
    )


def replay(
    store: DeadLetterStore,
    pipeline: Pipeline,
    writer: Writer,
    *,
    reason: str | None = None,
    ids: list[int] | None = None,
    stores: tuple[Store, ...] = STORES,
) -> ReplayResult:
    result = ReplayResult()
    if writer.spooled_batches:
        writer.drain_spool()
    for chunk in store.iter_pending(reason=reason, ids=ids):
        done: list[int] = []
        for letter in chunk:
            if letter.stage == "write":
                target = letter.topic.removeprefix("influxdb/") or writer.database
                try:  # one line: nothing to bisect; refused again, it stays this letter (not a new one)
                    writer.influx.write(target, letter.payload)
                except InfluxError as exc:
                    if exc.retryable:
                        raise
                    store.mark_failed(letter.id, REJECTED, exc.message)
                    result.still_failing += 1
                    continue
                result.lines_written += 1
                done.append(letter.id)
                continue
            msg = pipeline.message(letter.topic, letter.payload, letter.received_at)
            lines, again = pipeline.render(msg, pipeline.process(msg))
            lines = {s: ls for s, ls in lines.items() if s in stores}
            writer.write_stores(lines)
            result.lines_written += sum(len(ls) for ls in lines.values())
            if again is None:
                done.append(letter.id)
            else:
                store.mark_failed(letter.id, again.reason, again.detail)
                result.still_failing += 1
        store.mark_replayed(done)
        result.replayed += len(done)
    return result
