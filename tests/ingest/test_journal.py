"""The receipt journal: what a restarted worker knows of the messages it may see again."""

from __future__ import annotations

from ingest.journal import ReceiptJournal, message_key


def test_keys_tell_apart_same_content_with_different_packet_ids():
    a = message_key(b"gw/g/esphome/n/sensor/laeq/state", b"50.2", 17)
    assert a == message_key(b"gw/g/esphome/n/sensor/laeq/state", b"50.2", 17)  # a redelivery: same key
    assert a != message_key(b"gw/g/esphome/n/sensor/laeq/state", b"50.2", 18)  # the same value sent again
    assert a != message_key(b"gw/g/esphome/n/sensor/laeq/state", b"50.3", 17)
    assert a != message_key(b"gw/h/esphome/n/sensor/laeq/state", b"50.2", 17)


def test_persisted_times_survive_a_restart_and_rotation(tmp_path):
    path = tmp_path / "receipts.journal"
    j = ReceiptJournal(path, rotate_at=4)
    for i in range(6):
        j.remember(i, 1_000 + i)
    j.persist([0, 1_000, 1, 1_001, 2, 1_002])
    j.persist([3, 1_003, 4, 1_004, 5, 1_005])  # 6 records >= 4: the file rotates to .old
    j.close()
    with open(path, "ab") as f:
        f.write(b"\x01\x02\x03")  # a torn record from a crash mid-write is ignored
    again = ReceiptJournal(path, rotate_at=4)
    assert [again.get(i) for i in range(6)] == [1_000 + i for i in range(6)]
    assert again.get(99) is None
    again.close()


def test_memory_keeps_two_generations(tmp_path):
    j = ReceiptJournal(tmp_path / "j", rotate_at=3)
    for i in range(7):
        j.remember(i, i)
    # generations: [0,1,2] dropped, [3,4,5] old, [6] current
    assert j.get(0) is None and j.get(3) == 3 and j.get(6) == 6
    j.close()
