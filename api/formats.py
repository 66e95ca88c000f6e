"""The observations' formats: JSON, GeoJSON (cells as polygons), CSV (RFC 4180) and Parquet, from the frames
of an ``api.store.ObservationQuery``. JSON and GeoJSON are built whole; CSV and Parquet stream.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from api.geometry import cell_ring
from api.store import ObservationQuery
from api.timefmt import iso_times
from smartzone.quantities import QUANTITIES

NS = 1_000_000_000
MEDIA = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "geojson": "application/geo+json",
}


def records(frame: pd.DataFrame) -> list[dict]:
    out = frame.assign(time=iso_times(frame["time"]) if len(frame) else frame["time"])
    return [
        {k: v for k, v in r.items() if not (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)))}
        for r in out.to_dict("records")
    ]


def to_json(
    dataset: str, q: ObservationQuery, frame: pd.DataFrame, link: str | None, windows: list | None = None
) -> bytes:
    return orjson.dumps(
        {
            "dataset": dataset,
            "resolution": q.res,
            "level": q.level,
            "fields": [o[0] for o in q.outputs],
            "units": units(q),
            **({"windows": windows} if windows is not None else {}),
            "observations": records(frame),
            "links": {"next": link},
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def units(q: ObservationQuery) -> dict[str, str]:
    out = {}
    for name, f, a in q.outputs:
        quantity = QUANTITIES.get(f"{q.ds.source.measurement}.{f}")
        if quantity is not None and a not in ("count",):
            out[name] = quantity.unit
    return out


def to_geojson(
    dataset: str, q: ObservationQuery, frame: pd.DataFrame, link: str | None, windows: list | None = None
) -> bytes:
    features = [
        {
            "type": "Feature",
            "id": f"{r['cell']}/{r['time']}",
            "geometry": {"type": "Polygon", "coordinates": [cell_ring(r["cell"])]},
            "properties": r,
        }
        for r in records(frame)
    ]
    return orjson.dumps(
        {
            "type": "FeatureCollection",
            "dataset": dataset,
            "resolution": q.res,
            **({"windows": windows} if windows is not None else {}),
            "features": features,
            "links": {"next": link},
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def csv_points(q: ObservationQuery, position: tuple[int, int], limit: int) -> Iterator[bytes]:
    """The published points as CSV, from InfluxDB's CSV as it arrives, through Arrow's streaming reader and
    writer (no pandas): one query for the whole page, constant memory (blocks of about 1 MB)."""
    names = _schema(q, text_time=True).names
    yield (",".join(names) + "\r\n").encode()
    options = pacsv.WriteOptions(include_header=False, quoting_style="none", eol="\r\n")
    # every column typed up front: a streamed block must not infer a type another block contradicts
    types = {c: pa.string() for c in ("cell", "bin", "charter_version", "resolution", "profile")}
    types |= {"time": pa.int64(), "n_contributors": pa.int64(), "coverage": pa.float64()}
    types |= {name: pa.float64() for name, _f, _a in q.outputs}
    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
    with q.csv_page(position, limit) as body:
        try:
            reader = pacsv.open_csv(body, read_options=pacsv.ReadOptions(block_size=1 << 20), convert_options=convert)
        except pa.ArrowInvalid:  # an empty result: no header either
            return
        for batch in reader:
            if batch.num_rows == 0:
                continue
            seconds = pc.cast(pc.divide(batch["time"], NS), pa.int64()).cast(pa.timestamp("s", tz="UTC"))
            columns = {
                "time": pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ"),
                "cell": batch["cell"],
                "h3_resolution": batch["resolution"],
                "bin": batch["bin"],
                "charter_version": batch["charter_version"],
            }
            present = set(batch.schema.names)
            for name in names[5:]:
                columns[name] = batch[name] if name in present else pa.nulls(batch.num_rows)
            out = io.BytesIO()
            pacsv.write_csv(pa.table(columns), out, options)
            yield out.getvalue()


def csv_derived(q: ObservationQuery, position: tuple[int, int], limit: int) -> Iterator[bytes]:
    """RFC 4180 rows (CRLF), written by Arrow's CSV writer. Nothing needs quoting: cells are hexadecimal,
    bins and charter versions are checked identifiers, the rest are numbers."""
    schema = _schema(q, text_time=True)
    yield (",".join(schema.names) + "\r\n").encode()  # Arrow would quote the names
    options = pacsv.WriteOptions(include_header=False, quoting_style="none", eol="\r\n")
    for frame, _ in q.chunks(position, limit):
        if frame.empty:
            continue
        out = io.BytesIO()
        pacsv.write_csv(_table(frame, schema), out, options)
        yield out.getvalue()


def _table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    data = {c.name: frame[c.name] for c in schema}
    if pa.types.is_string(schema.field("time").type):
        data["time"] = iso_times(frame["time"]) if len(frame) else frame["time"].astype(str)
    else:
        data["time"] = pd.to_datetime(frame["time"].astype("int64"), utc=True)
    return pa.Table.from_pandas(pd.DataFrame(data), schema=schema, preserve_index=False)


def _schema(q: ObservationQuery, text_time: bool = False) -> pa.Schema:
    time = pa.string() if text_time else pa.timestamp("ns", tz="UTC")
    fields = [
        pa.field("time", time),
        pa.field("cell", pa.string()),
        pa.field("h3_resolution", pa.int32()),
        pa.field("bin", pa.string()),
        pa.field("charter_version", pa.string()),
    ]
    if "profile" in q.columns:
        fields.append(pa.field("profile", pa.string()))
    fields.append(pa.field("n_contributors", pa.int64()))
    if "coverage" in q.columns:
        fields.append(pa.field("coverage", pa.float64()))
    fields += [pa.field(name, pa.int64() if name in q.integers else pa.float64()) for name, _f, _a in q.outputs]
    return pa.schema(fields)


class _Drain(io.RawIOBase):
    """A write-only sink whose bytes are taken out as they come (Parquet row groups stream)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.parts.append(bytes(b))
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def to_parquet(q: ObservationQuery, position: tuple[int, int], limit: int) -> Iterator[bytes]:
    schema = _schema(q)
    sink = _Drain()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    for frame, _ in q.chunks(position, limit):
        if frame.empty:
            continue
        writer.write_table(_table(frame, schema))
        yield sink.take()
    writer.close()
    yield sink.take()
