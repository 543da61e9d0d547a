"""Re-exported domain errors the order path raises (codes in docs/api.md)."""

from exchange.errors import (  # noqa: F401
    EngineUnavailable,
    InsufficientFunds,
    NotFound,
    OrderNotCancellable,
    TooManyOpenOrders,
    UnknownSymbol,
    ValidationFailed,
    WalletUnavailable,
)
