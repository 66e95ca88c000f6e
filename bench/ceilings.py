"""The MQTT ceiling: a count-only subscriber and a publisher in their own processes, the same publisher and QoS
as the benchmarks' workloads. Shared by ``bench/run.py`` (ingest) and ``bench/gateway_bench.py`` (the agent's
replay against a live publish)."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time


def publisher_proc(port: int, messages, go, done_q) -> None:
    from gateways.publisher import Publisher
    from gateways.simulator import Emitted

    pub = Publisher("127.0.0.1", port, client_id=f"bench-pub-{os.getpid()}")
    go.wait()
    t0 = time.time()
    pub.publish((Emitted(t, p, ()) for t, p, _ in messages))
    ok = pub.wait_acked(600)
    t1 = time.time()
    pub.close()
    done_q.put((t0, t1, ok, pub.sent))


def counter_proc(port: int, expected: int, ready, result_q) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    state = {"n": 0, "first": None, "last": None}
    finished = threading.Event()

    def on_message(c, u, m):
        state["n"] += 1
        c.ack(m.mid, m.qos)
        if state["n"] == 1:
            state["first"] = time.time()
        if state["n"] >= expected:
            state["last"] = time.time()
            finished.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter", protocol=mqtt.MQTTv5, manual_ack=True)
    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.set()
    c.on_connect = lambda cl, *a: cl.subscribe("$share/counter/gw/#", qos=1)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 10_000
    c.connect("127.0.0.1", port, properties=props)
    cpu0 = sum(os.times()[:2])
    c.loop_start()
    finished.wait(600)
    cpu = sum(os.times()[:2]) - cpu0
    c.disconnect()
    c.loop_stop()
    result_q.put((state["first"], state["last"], state["n"], cpu))


def mqtt_ceiling(port: int, messages) -> tuple[float, float]:
    """(messages/s, subscriber CPU µs per message)."""
    ctx = mp.get_context("fork")
    ready, go, q_sub, q_pub = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    sub = ctx.Process(target=counter_proc, args=(port, len(messages), ready, q_sub))
    sub.start()
    ready.wait(10)
    pub = ctx.Process(target=publisher_proc, args=(port, messages, go, q_pub))
    pub.start()
    time.sleep(1.0)  # let the publisher connect before the clock starts
    go.set()
    t0, _, _, _ = q_pub.get(timeout=600)
    _, last, n, cpu = q_sub.get(timeout=600)
    pub.join()
    sub.join()
    return n / (last - t0), cpu / n * 1e6
