"""Replay dead letters once their cause is fixed (a device registered, a quantity added, a bug fixed).

A decode-stage letter goes through the pipeline again with the current registry and settings, with
its original receipt time, so readings without device time land exactly where they would have. A
write-stage letter (a line InfluxDB refused) is posted again as it is. A letter that fails again
stays pending with its new reason; good readings of a partly bad message are written either way
(idempotently). Lines for the ops and pseudonymous databases are written only when those are given.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.pipeline import Pipeline
from smartzone.errors import InfluxError
from storage.deadletters import DeadLetterStore
from storage.influx import Influx
from storage.writer import REJECTED


@dataclass
class ReplayResult:
    replayed: int = 0
    still_failing: int = 0
    lines_written: int = 0


def replay(store: DeadLetterStore, pipeline: Pipeline, influx: Influx, database: str, *,
           reason: str | None = None, ids: list[int] | None = None, ops_database: str | None = None,
           pseudonymous_database: str | None = None) -> ReplayResult:
    result = ReplayResult()
    for chunk in store.iter_pending(reason=reason, ids=ids):
        done: list[int] = []
        for letter in chunk:
            if letter.stage == "write":
                target = letter.topic.removeprefix("influxdb/") or database
                try:
                    influx.write(target, letter.payload)
                except InfluxError as exc:
                    if exc.retryable:
                        raise
                    store.mark_failed(letter.id, REJECTED, exc.message)
                    result.still_failing += 1
                    continue
                result.lines_written += 1
                done.append(letter.id)
                continue
            out = pipeline.process(pipeline.message(letter.topic, letter.payload, letter.received_at))
            if out.lines:
                influx.write(database, "\n".join(out.lines).encode())
                result.lines_written += len(out.lines)
            if out.ops_lines and ops_database:
                influx.write(ops_database, "\n".join(out.ops_lines).encode())
                result.lines_written += len(out.ops_lines)
            if out.pseudo_lines and pseudonymous_database:
                influx.write(pseudonymous_database, "\n".join(out.pseudo_lines).encode())
                result.lines_written += len(out.pseudo_lines)
            if out.letter is None:
                done.append(letter.id)
            else:
                store.mark_failed(letter.id, out.letter.reason, out.letter.detail)
                result.still_failing += 1
        store.mark_replayed(done)
        result.replayed += len(done)
    return result
