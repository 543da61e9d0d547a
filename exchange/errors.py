"""Domain errors: raised anywhere in app code, rendered once by the API's exception handler."""

from __future__ import annotations


class DomainError(Exception):
    """An expected failure with a stable machine code (the list in docs/api.md)."""

    code = "error"
    http_status = 400
    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None, *, details: dict | None = None):
        self.message = message or self.default_message
        self.details = details or {}
        super().__init__(self.message)


class ValidationFailed(DomainError):
    code = "validation_error"
    http_status = 400
    default_message = "Invalid input."

    @classmethod
    def field(cls, name: str, message: str) -> ValidationFailed:
        return cls(f"{name}: {message}", details={name: [message]})


class UnknownSymbol(DomainError):
    code = "unknown_symbol"
    http_status = 400
    default_message = "No such market."


class NotFound(DomainError):
    code = "not_found"
    http_status = 404
    default_message = "Not found."


class InsufficientFunds(DomainError):
    code = "insufficient_funds"
    http_status = 422
    default_message = "Insufficient funds for this order."


class TooManyOpenOrders(DomainError):
    code = "too_many_open_orders"
    http_status = 422
    default_message = "Too many open orders in this market."


class OrderNotCancellable(DomainError):
    code = "order_not_cancellable"
    http_status = 409
    default_message = "The order can no longer be cancelled."


class EngineUnavailable(DomainError):
    code = "engine_unavailable"
    http_status = 503
    default_message = "No live matching engine serves this market; nothing was created."


class WalletUnavailable(DomainError):
    code = "wallet_unavailable"
    http_status = 503
    default_message = "The wallet service is unavailable; nothing was created."
