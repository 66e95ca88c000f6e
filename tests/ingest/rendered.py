"""What the worker makes of one message: the pipeline's Points rendered per store, and its dead letter."""

from __future__ import annotations

from typing import NamedTuple

from smartzone.model import DeadLetter, Message, Point, Store


class Rendered(NamedTuple):
    lines: list[str]  # raw
    letter: DeadLetter | None
    ops_lines: list[str]
    pseudo_lines: list[str]
    points: list[Point]


def run(pipeline, msg: Message) -> Rendered:
    out = pipeline.process(msg)
    lines, letter = pipeline.render(msg, out)
    return Rendered(
        lines.get(Store.RAW, []), letter, lines.get(Store.OPS, []), lines.get(Store.PSEUDONYMOUS, []), out.points
    )
