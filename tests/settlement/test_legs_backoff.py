"""Pure parts of settlement: the transfer's legs and the retry schedule."""

from decimal import Context, Decimal

import pytest

from settlement.services import (
    InvalidTrade,
    ProcessReport,
    TradeTerms,
    backoff_seconds,
    legs_balance,
    settlement_legs,
    settlement_operation,
)

D = Decimal


def terms(**overrides) -> TradeTerms:
    values = dict(
        trade_id=7,
        buyer_id=1,
        seller_id=2,
        buy_order_id=11,
        sell_order_id=12,
        base_asset="BTC",
        quote_asset="USDT",
        quantity=D("0.00123"),
        quote_quantity=D("37.0314150"),
        buyer_fee=D("0.00000246"),  # 0.2% of the base received
        seller_fee=D("0.0370314150"),  # 0.1% of the quote received
    )
    values.update(overrides)
    return TradeTerms(**values)


def test_legs_capture_both_holds_credit_net_amounts_and_collect_fees(settings):
    settings.FEE_ACCOUNT = "exchange-fees"
    legs = settlement_legs(terms=terms())
    assert legs == [
        {"owner": "user:1", "asset": "USDT", "amount": D("37.0314150"), "from_hold": "order:11"},
        {"owner": "user:2", "asset": "BTC", "amount": D("0.00123"), "from_hold": "order:12"},
        {"owner": "user:1", "asset": "BTC", "amount": D("0.00122754")},
        {"owner": "user:2", "asset": "USDT", "amount": D("36.9943835850")},
        {"owner": "exchange-fees", "asset": "BTC", "amount": D("0.00000246")},
        {"owner": "exchange-fees", "asset": "USDT", "amount": D("0.0370314150")},
    ]
    assert legs_balance(legs) == {"BTC": 0, "USDT": 0}


def test_legs_are_exact_at_18_places_and_balance_per_asset():
    tiny = D("0.000000000000000001")
    big = D("12345678901234567890.123456789012345678")
    seller_fee = Context(prec=80).subtract(big, tiny)  # exact (the default context keeps 28 digits)
    legs = settlement_legs(
        terms=terms(quantity=big, quote_quantity=big, buyer_fee=tiny, seller_fee=seller_fee)
    )
    credits = {
        (leg["owner"], leg["asset"]): leg["amount"] for leg in legs if "from_hold" not in leg
    }
    assert credits[("user:1", "BTC")] == D("12345678901234567890.123456789012345677")
    assert credits[("user:2", "USDT")] == tiny
    assert all(net == 0 for net in legs_balance(legs).values())


def test_zero_fee_legs_are_left_out():
    legs = settlement_legs(terms=terms(buyer_fee=D(0), seller_fee=D(0)))
    assert len(legs) == 4
    assert all(leg["owner"] != "exchange-fees" for leg in legs)
    assert legs_balance(legs) == {"BTC": 0, "USDT": 0}


def test_the_operation_is_keyed_by_trade():
    operation = settlement_operation(terms=terms(trade_id=42))
    assert operation["key"] == "trade:42"
    assert operation["type"] == "transfer"


@pytest.mark.parametrize(
    "bad",
    [
        {"buyer_fee": D("0.01")},  # fee above what the buyer receives
        {"seller_fee": D("-1")},
        {"quantity": D(0)},
    ],
)
def test_a_trade_that_cannot_balance_is_refused(bad):
    with pytest.raises(InvalidTrade):
        settlement_legs(terms=terms(**bad))


def test_backoff_is_exponential_capped_and_jittered(settings):
    settings.SETTLEMENT_BACKOFF_BASE_SECONDS = 2
    settings.SETTLEMENT_BACKOFF_MAX_SECONDS = 60
    lows = [backoff_seconds(n, rand=lambda: 0.0) for n in range(1, 9)]
    highs = [backoff_seconds(n, rand=lambda: 1.0) for n in range(1, 9)]
    assert highs == [2, 4, 8, 16, 32, 60, 60, 60]
    assert lows == [h / 2 for h in highs]  # equal jitter: somewhere in the upper half
    import random

    rng = random.Random(5)
    draws = {round(backoff_seconds(3, rand=rng.random), 6) for _ in range(50)}
    assert len(draws) > 40 and all(4 <= d <= 8 for d in draws)


def test_retry_countdown_is_capped_below_the_visibility_timeout(settings):
    from datetime import timedelta

    from django.utils import timezone

    report = ProcessReport(retry={1: timezone.now() + timedelta(hours=3), 2: timezone.now()})
    assert 590 <= report.retry_countdown(cap=600) <= 600
    settings.SETTLEMENT_MAX_COUNTDOWN_SECONDS = 30
    assert report.retry_countdown() == 30
    assert ProcessReport().retry_countdown() == 0
