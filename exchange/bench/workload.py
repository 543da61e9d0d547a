"""The order mix: many traders on two markets, through the public HTTP API.

Per request (default shares): 60% placements, 20% cancels, 20% public reads.
Placements are 50% resting limits (0.05%..~2% away from a fixed mid), 30%
crossing limits (0.3% through the mid: they take resting liquidity, their rest
rests), 20% market orders (sells by quantity; buys by quantity or by quote
amount). Cancels target one of the 20 newest orders the API reported live, as
their owner; it may have traded meanwhile (409, expected). Reads are
the order book (depth 20), the ticker and recent trades, split evenly,
anonymous.

Placement requests are built before the run (a seeded ring of them, reused if a
soak outlasts it); cancels are built when sent, since they name a live order id.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from exchange.bench.load import HttpClient, Op, Recorder

PLACE = "POST /orders"
CANCEL = "DELETE /orders"
READ_BOOK = "GET /orderbook"
READ_TICKER = "GET /ticker"
READ_TRADES = "GET /trades"
BARE = "GET /bare"

PLACE_SHARE = 0.60
CANCEL_SHARE = 0.20  # the rest (0.20) are reads

LIVE = ("open", "partially_filled")


@dataclass(frozen=True)
class MarketSpec:
    symbol: str
    mid_ticks: int  # tick 0.01
    min_lots: int  # lot 0.00001
    max_lots: int


# tick 0.01, lot 0.00001, min notional 10 (the default markets)
MARKETS = (
    MarketSpec("BTC-USDT", mid_ticks=3_000_000, min_lots=50, max_lots=500),  # 0.0005-0.005 BTC at ~30,000
    MarketSpec("ETH-USDT", mid_ticks=200_000, min_lots=600, max_lots=6_000),  # 0.006-0.06 ETH at ~2,000
)
FUNDING = {"USDT": "50000000", "BTC": "2000", "ETH": "30000"}


def price(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


def qty(lots: int) -> str:
    return f"{lots // 100_000}.{lots % 100_000:05d}"


@dataclass
class Trader:
    user_id: int
    token: str
    auth: str = ""  # the request header line, built once

    def __post_init__(self) -> None:
        self.auth = f"Authorization: Bearer {self.token}\r\n"


class Workload:
    """Ops for the driver: `next_mixed()` (the mix), `next_placement()` (placements only)."""

    def __init__(self, client: HttpClient, traders: list[Trader], *, seed: int = 1, ring: int = 20_000,
                 place_share: float = PLACE_SHARE, cancel_share: float = CANCEL_SHARE) -> None:  # fmt: skip
        self.client = client
        self.traders = traders
        self.rng = random.Random(seed)
        self.place_share = place_share
        self.cancel_share = cancel_share
        self.live: list[tuple[int, int]] = []  # (trader index, order id) the API reported live
        self.placements = [self._build_placement() for _ in range(ring)]
        self.next_placement_index = 0
        self.reads = [
            client.get(f"/api/v1/orderbook/{m.symbol}?depth=20") for m in MARKETS
        ] + [
            client.get(f"/api/v1/markets/{m.symbol}/ticker") for m in MARKETS
        ] + [
            client.get(f"/api/v1/trades?symbol={m.symbol}&limit=50") for m in MARKETS
        ]  # fmt: skip
        self.read_kinds = [READ_BOOK] * len(MARKETS) + [READ_TICKER] * len(MARKETS) + [READ_TRADES] * len(MARKETS)

    # -- building --

    def _build_placement(self) -> tuple[bytes, int]:
        rng = self.rng
        index = rng.randrange(len(self.traders))
        market = rng.choice(MARKETS)
        side = "buy" if rng.random() < 0.5 else "sell"
        sign = 1 if side == "buy" else -1
        lots = rng.randint(market.min_lots, market.max_lots)
        roll = rng.random()
        if roll < 0.5:  # resting limit, away from the mid on its own side
            away = 0.0005 + min(rng.expovariate(1 / 0.002), 0.02)
            ticks = round(market.mid_ticks * (1 - sign * away))
            body = {"symbol": market.symbol, "side": side, "type": "limit", "price": price(ticks), "quantity": qty(lots)}
        elif roll < 0.8:  # crossing limit: 0.3% through the mid
            ticks = round(market.mid_ticks * (1 + sign * 0.003))
            body = {"symbol": market.symbol, "side": side, "type": "limit", "price": price(ticks), "quantity": qty(lots)}
        elif side == "buy" and rng.random() < 0.5:  # market buy by quote amount
            quote_ticks = round(market.mid_ticks * lots / 100_000)  # about the same value, whole cents
            body = {"symbol": market.symbol, "side": "buy", "type": "market", "quote_quantity": price(max(quote_ticks, 1500))}
        else:  # market order by quantity
            body = {"symbol": market.symbol, "side": side, "type": "market", "quantity": qty(lots)}
        raw = self.client.send_json("POST", "/api/v1/orders", json.dumps(body, separators=(",", ":")), self.traders[index].auth)
        return raw, index

    # -- ops --

    def next_placement(self) -> Op:
        raw, index = self.placements[self.next_placement_index]
        self.next_placement_index = (self.next_placement_index + 1) % len(self.placements)
        return Op(PLACE, raw, lambda status, body, rec: self._placed(index, status, body, rec))

    def next_mixed(self) -> Op:
        roll = self.rng.random()
        if roll < self.place_share:
            return self.next_placement()
        if roll < self.place_share + self.cancel_share:
            if not self.live:
                return self.next_placement()
            # one of the newest live orders (quotes are replaced while fresh; older ones
            # have mostly traded by now, which would make most cancels cheap 409s)
            live = self.live
            i = len(live) - 1 - self.rng.randrange(min(len(live), 20))
            live[i], live[-1] = live[-1], live[i]
            index, order_id = live.pop()
            raw = self.client.request_prefix("DELETE", f"/api/v1/orders/{order_id}", self.traders[index].auth) + "\r\n"
            return Op(CANCEL, raw.encode())
        i = self.rng.randrange(len(self.reads))
        return Op(self.read_kinds[i], self.reads[i])

    def _placed(self, index: int, status: int, body: bytes, rec: Recorder) -> None:
        if status not in (200, 201, 202):
            return
        rec.accepted_orders += 1
        try:
            data = json.loads(body)["data"]
            order = data["order"]
        except (ValueError, KeyError, TypeError):
            return
        rec.fills_seen += len(data.get("trades") or ())
        if order.get("status") in LIVE or status == 202:
            self.live.append((index, order["id"]))
