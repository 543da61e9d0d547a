"""Staff review of the settlement outbox: dead letters first, retry or resolve them.

Everything that concerns money is read-only here; the only writes are the two
actions, and both go through `settlement.services` (the same code the workers use).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from exchange.errors import DomainError
from settlement import selectors, services
from settlement.models import HoldRelease, Settlement, SettlementAttempt


def _admin_link(obj, text=None) -> str:
    """A link to the object's admin page when its model is registered, else plain text."""
    if obj is None:
        return "-"
    text = text or str(obj)
    try:
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return text
    return format_html('<a href="{}">{}</a>', url, text)


class UserFilter(admin.SimpleListFilter):
    title = "user (buyer or seller)"
    parameter_name = "user"

    def lookups(self, request, model_admin):
        return [(str(pk), username) for pk, username in selectors.settlement_parties()]

    def queryset(self, request, queryset):
        value = self.value()
        if value and value.isdigit():
            return selectors.settlements_filter(queryset, user_id=int(value))
        return queryset


class ErrorFilter(admin.SimpleListFilter):
    title = "last error"
    parameter_name = "error"
    model = Settlement

    def lookups(self, request, model_admin):
        return [(code, code) for code in selectors.settlement_error_codes(model=self.model)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(last_error_code=self.value())
        return queryset


class ReleaseErrorFilter(ErrorFilter):
    model = HoldRelease


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _, _) in selectors.AGE_BUCKETS.items()]

    def queryset(self, request, queryset):
        if self.value():
            return selectors.settlements_filter(queryset, age=self.value())
        return queryset


class SettlementAttemptInline(admin.TabularInline):
    model = SettlementAttempt
    fields = ("at", "attempt", "outcome", "error", "actor")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-at", "-id")
    verbose_name = "attempt"
    verbose_name_plural = "attempt history"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Settlement)
class SettlementAdmin(admin.ModelAdmin):
    list_display = (
        "trade_id_link",
        "status",
        "market",
        "parties",
        "amounts",
        "attempts",
        "last_error_code",
        "age",
        "next_attempt_at",
        "settled_at",
        "resolution",
    )
    list_filter = (
        "status",
        ("trade__market", admin.RelatedOnlyFieldListFilter),
        UserFilter,
        ErrorFilter,
        AgeFilter,
        "resolution",
    )
    search_fields = (
        "=trade__id",
        "trade__buyer__username",
        "trade__seller__username",
        "last_error",
    )
    list_per_page = 100
    show_full_result_count = False
    actions = ["retry_settlements", "resolve_settlements"]
    inlines = [SettlementAttemptInline]
    fieldsets = (
        (
            "Settlement",
            {
                "fields": (
                    "trade_summary",
                    "status",
                    "attempts",
                    "next_attempt_at",
                    "last_error_code",
                    "last_error",
                    "created_at",
                    "settled_at",
                )
            },
        ),
        ("Resolution", {"fields": ("resolution", "resolution_note", "resolved_by", "resolved_at")}),
        ("Orders", {"fields": ("orders_summary",)}),
        ("Wallet transfer", {"fields": ("legs_table",)}),
    )
    readonly_fields = (
        "trade_summary",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error_code",
        "last_error",
        "created_at",
        "settled_at",
        "resolution",
        "resolution_note",
        "resolved_by",
        "resolved_at",
        "orders_summary",
        "legs_table",
    )

    def get_queryset(self, request):
        return selectors.settlements_for_review()

    def get_ordering(self, request):
        return ("review_rank", "-created_at")

    # Read-only: no add, no delete, no edit form; the actions are the only writes.
    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # Actions need "change" on the changelist; a settlement's own page stays read-only.
        return obj is None and super().has_change_permission(request)

    # -- columns --

    @admin.display(description="trade", ordering="trade_id")
    def trade_id_link(self, obj):
        return f"#{obj.trade_id}"

    @admin.display(description="market", ordering="trade__market__symbol")
    def market(self, obj):
        return obj.trade.market.symbol

    @admin.display(description="buyer / seller")
    def parties(self, obj):
        return f"{obj.trade.buyer.get_username()} / {obj.trade.seller.get_username()}"

    @admin.display(description="quantity @ price")
    def amounts(self, obj):
        return f"{obj.trade.quantity.normalize():f} @ {obj.trade.price.normalize():f}"

    @admin.display(description="age", ordering="created_at")
    def age(self, obj):
        return timesince(obj.created_at, timezone.now())

    # -- detail --

    @admin.display(description="trade")
    def trade_summary(self, obj):
        trade = obj.trade
        return format_html(
            "{} &middot; {} {} @ {} = {} {} &middot; taker {} &middot; fees: buyer {} {}, seller {} {} &middot; at {}",
            _admin_link(trade, f"trade #{trade.pk}"),
            trade.market.symbol,
            f"{trade.quantity.normalize():f}",
            f"{trade.price.normalize():f}",
            f"{trade.quote_quantity.normalize():f}",
            trade.market.quote_asset,
            trade.taker_side,
            f"{trade.buyer_fee.normalize():f}",
            trade.market.base_asset,
            f"{trade.seller_fee.normalize():f}",
            trade.market.quote_asset,
            trade.created_at.isoformat(),
        )

    @admin.display(description="buy and sell orders")
    def orders_summary(self, obj):
        trade = obj.trade
        rows = []
        for label, order in (("maker", trade.maker_order), ("taker", trade.taker_order)):
            rows.append(
                (
                    _admin_link(order, f"order #{order.pk}"),
                    label,
                    order.side,
                    order.user.get_username(),
                    order.status,
                    f"{order.price.normalize():f}" if order.price is not None else "-",
                    f"{order.quantity.normalize():f}" if order.quantity is not None else "-",
                    f"{order.filled_quantity.normalize():f}",
                    f"{order.hold_amount.normalize():f} {order.hold_asset}",
                    order.hold_key,
                )
            )
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            rows,
        )
        return format_html(
            '<table class="settlement-orders"><thead><tr><th>order</th><th>role</th><th>side</th><th>user</th>'
            "<th>status</th><th>price</th><th>quantity</th><th>filled</th><th>hold</th><th>hold key</th>"
            "</tr></thead><tbody>{}</tbody></table>",
            body,
        )

    @admin.display(description="legs")
    def legs_table(self, obj):
        view = selectors.settlement_legs_view(obj)
        if view.error:
            return format_html("<strong>cannot build the transfer:</strong> {}", view.error)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    leg["owner"],
                    leg["asset"],
                    f"-{leg['amount'].normalize():f}"
                    if leg.get("from_hold")
                    else f"+{leg['amount'].normalize():f}",
                    f"debit hold {leg['from_hold']}"
                    if leg.get("from_hold")
                    else "credit available",
                )
                for leg in view.legs
            ),
        )
        balance = ", ".join(
            f"{asset}: {net.normalize():f}" for asset, net in sorted(view.balance.items())
        )
        return format_html(
            '<p>Idempotency key <code>{}</code></p><table class="settlement-legs"><thead><tr><th>owner</th>'
            "<th>asset</th><th>amount</th><th>leg</th></tr></thead><tbody>{}</tbody></table>"
            "<p>Per-asset balance of the legs (0 = balanced): {}</p>",
            view.key,
            rows,
            balance,
        )

    # -- actions --

    @admin.action(description="Retry the selected settlements", permissions=["change"])
    def retry_settlements(self, request, queryset):
        ids = list(queryset.values_list("trade_id", flat=True))
        count = services.settlements_retry(trade_ids=ids, actor=request.user)
        for settlement in queryset.filter(trade_id__in=ids):
            self.log_change(request, settlement, "Retry requested.")
        skipped = len(ids) - count
        self.message_user(
            request,
            f"{count} settlement(s) re-sent to the workers"
            + (f"; {skipped} already settled or resolved, left alone." if skipped else "."),
            messages.SUCCESS if count else messages.WARNING,
        )

    @admin.action(
        description="Mark resolved (asks the wallet first; note required)", permissions=["change"]
    )
    def resolve_settlements(self, request, queryset):
        note = (request.POST.get("note") or "").strip()
        if "confirm" in request.POST and note:
            settled = adjusted = 0
            for settlement in queryset:
                try:
                    result = services.settlement_resolve(
                        trade_id=settlement.trade_id, actor=request.user, note=note
                    )
                except DomainError as exc:
                    self.message_user(
                        request, f"Trade #{settlement.trade_id}: {exc.message}", messages.ERROR
                    )
                    continue
                if result.resolution == Settlement.Resolution.TRANSFER_APPLIED:
                    settled += 1
                    self.log_change(
                        request,
                        result,
                        f"Resolved: the wallet had applied the transfer; settled. Note: {note}",
                    )
                else:
                    adjusted += 1
                    self.log_change(request, result, f"Resolved without transfer. Note: {note}")
            if settled:
                self.message_user(
                    request,
                    f"{settled} settlement(s) found applied at the wallet: marked settled.",
                    messages.SUCCESS,
                )
            if adjusted:
                self.message_user(
                    request,
                    f"{adjusted} settlement(s) resolved without transfer (recorded as an adjustment).",
                    messages.WARNING,
                )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Resolve settlements",
            "opts": self.model._meta,
            "queryset": queryset,
            "action": "resolve_settlements",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "note": note,
            "note_missing": "confirm" in request.POST and not note,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/settlement/settlement/resolve.html", context)


@admin.register(HoldRelease)
class HoldReleaseAdmin(admin.ModelAdmin):
    list_display = (
        "order_link",
        "user",
        "asset",
        "amount",
        "status",
        "attempts",
        "last_error_code",
        "created_at",
        "done_at",
    )
    list_filter = ("status", "asset", ReleaseErrorFilter)
    search_fields = ("=order__id", "order__user__username", "last_error")
    list_select_related = ("order", "order__user")
    actions = ["retry_releases"]
    readonly_fields = (
        "order_link",
        "user",
        "asset",
        "amount",
        "hold_key",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error_code",
        "last_error",
        "created_at",
        "done_at",
    )
    fields = readonly_fields

    def get_queryset(self, request):
        return selectors.holdreleases_for_review()

    def get_ordering(self, request):
        return ("review_rank", "-created_at")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request)

    @admin.display(description="order", ordering="order_id")
    def order_link(self, obj):
        return _admin_link(obj.order, f"order #{obj.order_id}")

    @admin.display(description="user")
    def user(self, obj):
        return obj.order.user.get_username()

    @admin.display(description="hold key")
    def hold_key(self, obj):
        return obj.order.hold_key

    @admin.action(description="Retry the selected hold releases", permissions=["change"])
    def retry_releases(self, request, queryset):
        ids = list(queryset.values_list("order_id", flat=True))
        count = services.holdreleases_retry(order_ids=ids, actor=request.user)
        for release in queryset.filter(order_id__in=ids):
            self.log_change(request, release, "Retry requested.")
        self.message_user(
            request,
            f"{count} hold release(s) re-sent to the workers.",
            messages.SUCCESS if count else messages.WARNING,
        )
