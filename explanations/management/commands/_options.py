"""Shared pieces of the explanations management commands (not a command itself)."""

from __future__ import annotations

from argparse import RawDescriptionHelpFormatter
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter


class HelpFormatter(DjangoHelpFormatter, RawDescriptionHelpFormatter):
    """Django's option order, with the epilog's examples printed as written."""


class ExampleCommand(BaseCommand):
    """A command whose ``--help`` ends with the examples in :attr:`epilog`."""

    epilog = ""

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = HelpFormatter
        parser.epilog = self.epilog
        return parser


def owner_get(username: str | None):
    """The user named ``username`` (None for none).

    Raises:
        CommandError: no such user.
    """
    if not username:
        return None
    User = get_user_model()
    try:
        return User.objects.get(username=username)
    except User.DoesNotExist:
        raise CommandError(f"--owner: no user named {username!r}") from None


def broker_folders_ensure() -> None:
    """Create the embedded filesystem broker's folders, as ``demo`` does before its worker.

    Only ``demo`` created them, so on a fresh embedded default the first enqueue (and a worker
    started by hand) failed with FileNotFoundError on ``var/broker/queue``. No-op for Redis
    or AMQP brokers.
    """
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)
