"""Read-only admin for the ledger: money is never edited by hand."""

from django.contrib import admin

from wallet.models import Account, Entry, Hold, Operation


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class EntryInline(admin.TabularInline):
    model = Entry
    fk_name = "operation"
    fields = ("account", "bucket", "amount", "hold", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class HoldEntryInline(EntryInline):
    fk_name = "hold"
    fields = ("operation", "account", "bucket", "amount", "created_at")
    readonly_fields = fields


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ("owner", "asset", "available", "held", "updated_at")
    list_filter = ("asset",)
    search_fields = ("owner",)


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ("key", "account", "amount", "captured", "released", "created_at")
    search_fields = ("key", "account__owner")
    list_select_related = ("account",)
    date_hierarchy = "created_at"
    inlines = [HoldEntryInline]


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = ("key", "kind", "created_at")
    list_filter = ("kind",)
    search_fields = ("key",)
    date_hierarchy = "created_at"
    inlines = [EntryInline]
