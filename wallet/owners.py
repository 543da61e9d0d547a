"""How the exchange names wallet owners."""


def owner_for_user(user_id: int) -> str:
    return f"user:{user_id}"
