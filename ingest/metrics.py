"""The ingest worker's self-metrics in the ops database: one definition, for the writer and the readers.

The worker writes them as Points (``ingest.worker.Worker.report_metrics``) every ``metrics_interval``;
``smartzone status``, the dashboards and the benchmarks read them by these names.

- ``ingest`` (tag ``worker``): cumulative counters ``INGEST_COUNTERS`` (integers) and, when the interval
  wrote anything, the write latency in milliseconds (``WRITE_LATENCY_P50``, ``WRITE_LATENCY_MAX``).
  ``ignored``: messages on ``ingest.ignore`` topics; ``no_route_not_kept``: messages no route matches beyond
  the cap (``ingest.no_route_per_hour``), counted but not kept; ``fields_dropped``: NaN/infinite fields left
  out of a point (a LoRaWAN radio's snr).
- ``deadletters`` (tags ``worker``, ``reason``): ``count`` (cumulative) and ``new`` (since the last report),
  per problem of the letters; ``no_route`` counts every message no route matches, kept or not.
- ``sensors`` (the sensor's tags): ``readings`` since the last report.
"""

from __future__ import annotations

INGEST = "ingest"
DEADLETTERS = "deadletters"
SENSORS = "sensors"

WORKER = "worker"  # tag of ingest and deadletters
REASON = "reason"  # tag of deadletters
COUNT = "count"
NEW = "new"
READINGS = "readings"  # field of sensors

INGEST_COUNTERS = (
    "received",
    "decoded",
    "readings",
    "dead_lettered",
    "ignored",
    "no_route_not_kept",
    "fields_dropped",
    "lines_written",
    "lines_rejected",
    "batches",
    "batches_spooled",
    "batches_unspooled",
    "spool_files",
    "retries",
    "acked",
    "queue_depth",
    "backlog_bytes",
)
WRITE_LATENCY_P50 = "write_latency_ms_p50"
WRITE_LATENCY_MAX = "write_latency_ms_max"
INGEST_FIELDS = (*INGEST_COUNTERS, WRITE_LATENCY_P50, WRITE_LATENCY_MAX)
# what ``smartzone status`` shows of a worker's last report, in this order
STATUS_FIELDS = (
    "received",
    "decoded",
    "readings",
    "dead_lettered",
    "no_route_not_kept",
    "fields_dropped",
    "lines_written",
    "lines_rejected",
    "queue_depth",
    "backlog_bytes",
    "batches_spooled",
    "batches_unspooled",
    "spool_files",
    "retries",
    WRITE_LATENCY_P50,
    WRITE_LATENCY_MAX,
)

# What each figure counts, for ``smartzone status`` (cumulative since the worker started unless said otherwise).
# received, decoded and dead-lettered count MQTT messages; readings counts values; lines count InfluxDB points.
MEANINGS = {
    "received": "MQTT messages the worker took from the broker",
    "decoded": "messages that gave at least one point to store (readings, radio metadata, positions, sightings)",
    "dead_lettered": "messages with a dead letter: refused whole, or one bad value beside good readings",
    "readings": "values decoded (one message often carries several: a sensor's quantities, a pack of samples)",
    "no_route_not_kept": "messages on topics no route reads, beyond the dead-letter cap (counted, not kept)",
    "fields_dropped": "NaN or infinite radio fields left out of their point (the point was written without them)",
    "lines_written": "InfluxDB points written: a sensor's readings at one time share a point; radio metadata "
    "(LoRaWAN), positions and sightings add their own",
    "lines_rejected": "points InfluxDB refused (each becomes a dead letter)",
    "queue_depth": "messages received and not yet acked to the broker (waiting for their durable write)",
    "backlog_bytes": "bytes of those messages",
    "batches_spooled": "batches written to the disk spool while InfluxDB was away",
    "batches_unspooled": "spooled batches written to InfluxDB since",
    "spool_files": "batches on disk now",
    "retries": "write attempts repeated",
    WRITE_LATENCY_P50: "median write time in the last interval",
    WRITE_LATENCY_MAX: "slowest write in the last interval",
}
