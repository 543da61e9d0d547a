"""The wallet's operator command and its read-only admin."""

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from wallet.models import Account, Hold, Operation
from wallet.selectors import balances_of
from wallet.services import hold_place

pytestmark = pytest.mark.django_db


def test_deposit_command_credits_the_user(make_user, capsys):
    user = make_user("alice")
    call_command("deposit", "alice", "USDT", "1000.50")
    call_command("deposit", "alice", "usdt", "0.5")  # a fresh key each run: both count
    (row,) = balances_of(owner=f"user:{user.pk}")
    assert (row.asset, row.available, row.held) == ("USDT", Decimal("1001"), 0)
    assert "available 1001" in capsys.readouterr().out
    assert Operation.objects.filter(kind="deposit").count() == 2


def test_deposit_command_with_a_key_is_idempotent(make_user):
    user = make_user("bob")
    call_command("deposit", "bob", "BTC", "1", "--key", "dep:bob:1")
    call_command("deposit", "bob", "BTC", "1", "--key", "dep:bob:1")
    assert balances_of(owner=f"user:{user.pk}")[0].available == 1


@pytest.mark.parametrize("args, message", [(["nobody", "BTC", "1"], "No user"), (["carol", "BTC", "-1"], "validation_error")])
def test_deposit_command_errors(make_user, args, message):
    make_user("carol")
    with pytest.raises(CommandError, match=message):
        call_command("deposit", *args)


def test_admin_is_read_only(admin_client, funded):
    owner = funded("USDT", "10")
    hold_place(key="order:adm", owner=owner, asset="USDT", amount=Decimal("1"))
    account = Account.objects.get(owner=owner)
    hold = Hold.objects.get(key="order:adm")
    operation = Operation.objects.filter(kind="deposit").first()
    for model, obj in (("account", account), ("hold", hold), ("operation", operation)):
        assert admin_client.get(f"/admin/wallet/{model}/").status_code == 200
        assert admin_client.get(f"/admin/wallet/{model}/{obj.pk}/change/").status_code == 200
        assert admin_client.get(f"/admin/wallet/{model}/add/").status_code == 403
        assert admin_client.post(f"/admin/wallet/{model}/{obj.pk}/delete/").status_code == 403
    response = admin_client.post(f"/admin/wallet/account/{account.pk}/change/", {"available": "999"})
    assert response.status_code == 403
    account.refresh_from_db()
    assert account.available == Decimal("9")
