"""The engine's outbox relay: at once when quiet, then at most one message per interval."""

from settlement.relay import OutboxRelay


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _relay():
    sent = []
    clock = Clock()
    relay = OutboxRelay(lambda **ids: sent.append(ids), interval=0.1, clock=clock)
    return relay, sent, clock


def test_the_first_rows_after_a_quiet_spell_go_at_once():
    relay, sent, _ = _relay()
    relay.add(trade_ids=[1, 2], released_order_ids=[7])
    assert sent == [{"trade_ids": [1, 2], "released_order_ids": [7]}]


def test_rows_within_the_interval_ride_the_next_message():
    relay, sent, clock = _relay()
    relay.add(trade_ids=[1], released_order_ids=[])
    clock.now += 0.03
    relay.add(trade_ids=[2], released_order_ids=[8])
    clock.now += 0.03
    relay.add(trade_ids=[3], released_order_ids=[])
    relay.flush()
    assert sent == [{"trade_ids": [1], "released_order_ids": []}]
    clock.now += 0.05  # the interval is over
    relay.flush()
    assert sent[1:] == [{"trade_ids": [2, 3], "released_order_ids": [8]}]
    relay.flush()
    assert len(sent) == 2  # nothing left: no empty message


def test_force_sends_what_is_left_without_waiting():
    relay, sent, clock = _relay()
    relay.add(trade_ids=[1], released_order_ids=[])
    relay.add(trade_ids=[2], released_order_ids=[])
    relay.flush(force=True)
    assert [message["trade_ids"] for message in sent] == [[1], [2]]
