"""Value types of the matching core: constants, the mutable ``Order`` and the events.

Everything here is plain integers and strings so the hot path never pays for enum
lookups: prices are integer ticks, quantities integer lots, quote amounts integer
quote units (tick x lot) and fees integer fee units (see ``OrderBook``).
"""

from __future__ import annotations

# Sides.
BUY = 0
SELL = 1

# Order kinds.
LIMIT = 0
MARKET = 1
STOP_LIMIT = 2
STOP_MARKET = 3

# Time in force.
GTC = 0
IOC = 1
FOK = 2

# Self-trade prevention modes (per book).
EXPIRE_TAKER = 0
EXPIRE_MAKER = 1
EXPIRE_BOTH = 2

# Order statuses. ``PENDING`` is the state of an Order object the book has not seen yet.
PENDING = "pending"
OPEN = "open"
PARTIALLY_FILLED = "partially_filled"
FILLED = "filled"
CANCELLED = "cancelled"
EXPIRED = "expired"
REJECTED = "rejected"
UNTRIGGERED = "untriggered"

# Reasons (``Order.reason``) for an order that ended without being filled.
SELF_TRADE_PREVENTED = "self_trade_prevented"
POST_ONLY_WOULD_TAKE = "post_only_would_take"
STOP_WOULD_TRIGGER_IMMEDIATELY = "stop_would_trigger_immediately"
FOK_NOT_FILLED = "fok_not_filled"
IOC_REMAINDER = "ioc_remainder"
FUNDS_EXHAUSTED = "funds_exhausted"
CANCELLED_BY_USER = "cancelled_by_user"

SIDE_NAMES = ("buy", "sell")
KIND_NAMES = ("limit", "market", "stop_limit", "stop_market")
TIF_NAMES = ("gtc", "ioc", "fok")
STP_NAMES = ("expire_taker", "expire_maker", "expire_both")


class Order:
    """One order; the book mutates its state fields in place.

    Inputs: ``id``, ``owner`` (self-trade prevention compares owners), ``side``,
    ``kind``, ``tif``, ``price`` (ticks; limit and stop-limit), ``stop_price``
    (ticks; stop kinds), ``quantity`` (lots; ``None`` only for a market buy that
    spends ``quote_limit``), ``quote_limit`` (quote units a BUY may spend at most,
    i.e. its hold; ``None`` = unlimited; ignored for sells), ``post_only``.

    State kept by the book: ``remaining`` (lots not yet filled; 0 for a buy by
    quote), ``filled`` (lots), ``filled_quote`` (quote units), ``fee`` (fee units
    of the asset the order receives), ``seq`` (time priority, 0 until placed),
    ``status`` and ``reason``.

    A plain ``__slots__`` class rather than a dataclass: the book holds one per
    resting order, so its size and attribute speed are what matter.
    """

    __slots__ = (
        "id",
        "owner",
        "side",
        "kind",
        "tif",
        "price",
        "stop_price",
        "quantity",
        "quote_limit",
        "post_only",
        "remaining",
        "filled",
        "filled_quote",
        "fee",
        "seq",
        "status",
        "reason",
    )

    def __init__(
        self,
        id: int,
        owner: int,
        side: int,
        kind: int,
        tif: int = GTC,
        price: int | None = None,
        quantity: int | None = None,
        stop_price: int | None = None,
        quote_limit: int | None = None,
        post_only: bool = False,
    ) -> None:
        self.id = id
        self.owner = owner
        self.side = side
        self.kind = kind
        self.tif = tif
        self.price = price
        self.stop_price = stop_price
        self.quantity = quantity
        self.quote_limit = quote_limit
        self.post_only = post_only
        self.remaining = quantity if quantity is not None else 0
        self.filled = 0
        self.filled_quote = 0
        self.fee = 0
        self.seq = 0
        self.status = PENDING
        self.reason = None

    def copy(self) -> Order:
        """Return an independent copy with the same inputs and state. O(1)."""
        other = Order.__new__(Order)
        for name in Order.__slots__:
            setattr(other, name, getattr(self, name))
        return other

    def state(self) -> tuple:
        """Return every field as a tuple (for comparisons in tests and checks). O(1)."""
        return tuple(getattr(self, name) for name in Order.__slots__)

    def __repr__(self) -> str:
        return (
            f"Order(id={self.id}, owner={self.owner}, {SIDE_NAMES[self.side]} "
            f"{KIND_NAMES[self.kind]} {TIF_NAMES[self.tif]}, price={self.price}, "
            f"stop={self.stop_price}, qty={self.quantity}, quote_limit={self.quote_limit}, "
            f"post_only={self.post_only}, remaining={self.remaining}, filled={self.filled}, "
            f"filled_quote={self.filled_quote}, fee={self.fee}, seq={self.seq}, "
            f"status={self.status}, reason={self.reason})"
        )


# Events are plain tuples, the cheapest object CPython builds (a tuple subclass with
# named fields costs a type call and a copy on top, and the book makes one or two per
# command). Item 0 is the kind, item 1 the book's ``seq`` (strictly increasing across
# all events of a book); the rest are references to the live Order objects, so a
# consumer reads the orders' final state after a batch instead of copying it per event.
#
#   (ACCEPTED, seq, order)    the order entered the book: it rests, or waits untriggered
#   (TRIGGERED, seq, order)   a stop's condition held; it enters matching, seq its priority
#   (CANCELLED, seq, order)   cancelled by its owner (reason ``cancelled_by_user``)
#   (EXPIRED, seq, order)     it (or its remainder) ended unfilled; ``order.reason`` says why
#   (REJECTED, seq, order)    refused on entry; ``order.reason`` says why
#   (TRADE, seq, maker, taker, price, quantity, quote, maker_fee, taker_fee)
#       a fill between the resting ``maker`` and the incoming ``taker``: price in ticks
#       (the maker's), quantity in lots, ``quote == price * quantity`` in quote units;
#       fees in fee units, the buyer's of base, the seller's of quote (each pays in
#       the asset it receives)
#
# The kinds are strings, compared by identity (``event[0] is TRADE``); the last three
# are the statuses the order ends in.
ACCEPTED = "accepted"
TRIGGERED = "triggered"
TRADE = "trade"
EVENT_KINDS = (ACCEPTED, TRIGGERED, TRADE, CANCELLED, EXPIRED, REJECTED)
