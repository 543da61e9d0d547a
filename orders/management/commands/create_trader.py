from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create a trader account that can log in to the API."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password", required=True)
        parser.add_argument("--staff", action="store_true", help="may also use the admin")

    def handle(self, *args, **opts):
        users = get_user_model()
        if users.objects.filter(username=opts["username"]).exists():
            raise CommandError(f"user {opts['username']} already exists")
        user = users.objects.create_user(username=opts["username"], password=opts["password"])
        if opts["staff"]:
            user.is_staff = user.is_superuser = True
            user.save(update_fields=["is_staff", "is_superuser"])
        self.stdout.write(f"created trader {user.username} (id {user.pk})")
