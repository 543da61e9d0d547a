"""MarketUnits: exact Decimal <-> integer conversions at the edge of the core."""

from decimal import Decimal, localcontext

import pytest

from matching.core import MarketUnits, OrderBook

D = Decimal


@pytest.fixture
def units():
    return MarketUnits(D("0.01"), D("0.00001"), D("0.001"), D("0.0025"))


def test_fee_scale_and_numerators(units):
    assert units.fee_scale == 10_000
    assert (units.maker_fee_num, units.taker_fee_num) == (10, 25)
    assert units.book_kwargs() == {"maker_fee": 10, "taker_fee": 25, "fee_scale": 10_000}
    OrderBook(**units.book_kwargs()).check()


@pytest.mark.parametrize(
    "maker, taker, scale, nums",
    [
        ("0", "0", 1, (0, 0)),
        ("0.001", "0.002", 1000, (1, 2)),
        ("0.0010", "0.002000", 1000, (1, 2)),  # trailing zeros do not widen the scale
        ("0.1", "0.00015", 100_000, (10_000, 15)),
        ("0E-8", "0.5", 10, (0, 5)),
    ],
)
def test_fee_scale_cases(maker, taker, scale, nums):
    u = MarketUnits(D("1"), D("1"), D(maker), D(taker))
    assert u.fee_scale == scale and (u.maker_fee_num, u.taker_fee_num) == nums


def test_price_and_quantity_round_trip(units):
    assert units.price_to_ticks(D("30000.00")) == 3_000_000
    assert units.price_to_ticks(D("30000")) == 3_000_000
    assert units.price_to_ticks(D("0.01")) == 1
    assert units.qty_to_lots(D("0.010")) == 1000
    assert units.qty_to_lots(D("1E-5")) == 1
    assert units.ticks_to_price(3_000_000) == D("30000.00")
    assert str(units.ticks_to_price(3_000_001)) == "30000.01"
    assert str(units.lots_to_qty(1000)) == "0.01000"


@pytest.mark.parametrize("bad", ["30000.001", "0.005", "1E-3"])
def test_off_tick_price_raises(units, bad):
    with pytest.raises(ValueError):
        units.price_to_ticks(D(bad))


def test_off_lot_quantity_and_quote_raise(units):
    with pytest.raises(ValueError):
        units.qty_to_lots(D("0.000001"))
    with pytest.raises(ValueError):
        units.quote_to_units(D("0.00000001"))
    with pytest.raises(ValueError):
        units.price_to_ticks(D("NaN"))
    with pytest.raises(ValueError):
        units.price_to_ticks(D("Infinity"))


def test_floats_refused(units):
    with pytest.raises(TypeError):
        units.price_to_ticks(1.5)
    with pytest.raises(TypeError):
        MarketUnits(0.01, D("1"), D("0"), D("0"))


def test_quote_units(units):
    # One quote unit = tick x lot = 1E-7.
    assert units.quote_to_units(D("300.0000000")) == 3_000_000_000
    assert units.quote_to_units(D("0.0000001")) == 1
    assert units.units_to_quote(3_000_000 * 1000) == D("300.0000000")
    price, qty = units.price_to_ticks(D("30000.01")), units.qty_to_lots(D("0.00123"))
    assert units.units_to_quote(price * qty) == D("30000.01") * D("0.00123")


def test_fees_to_decimal_exact(units):
    # Buyer receives 123 lots = 0.00123 base; taker fee 0.25% = 0.0000030750 base.
    lots = 123
    assert units.base_fee(lots * units.taker_fee_num) == D("0.00123") * D("0.0025")
    quote = 3_000_001 * lots  # quote units received by the seller
    fee = units.quote_fee(quote * units.maker_fee_num)
    assert fee == units.units_to_quote(quote) * D("0.001")
    # gross = net + fee, exactly
    gross = units.units_to_quote(quote)
    assert (gross - fee) + fee == gross


def test_exact_beyond_context_precision():
    u = MarketUnits(D("0.000000000000000001"), D("0.000000000000000001"), D("0"), D("0"))
    big = 10**30 + 7
    with localcontext() as ctx:
        ctx.prec = 5  # conversions must not depend on the context
        assert u.ticks_to_price(big) == D(f"{big}E-18")
        assert u.price_to_ticks(D(f"{big}E-18")) == big
        assert u.units_to_quote(big) == D(f"{big}E-36")


def test_invalid_market_definitions():
    with pytest.raises(ValueError):
        MarketUnits(D("0"), D("1"), D("0"), D("0"))
    with pytest.raises(ValueError):
        MarketUnits(D("1"), D("-1"), D("0"), D("0"))
    with pytest.raises(ValueError):
        MarketUnits(D("1"), D("1"), D("-0.001"), D("0"))
