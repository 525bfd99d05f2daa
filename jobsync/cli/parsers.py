"""The option groups every command draws on, and the type of the command registry.

``main.build_parser`` makes one ``Shared`` and hands it, with the
sub-parser registry, to each module that adds commands (``drain``,
``cockpit``), so that they all spell ``--dsn``, ``--site`` and ``--json``
alike.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

import attrs

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


@attrs.frozen
class Shared:
    """Parent parsers: the connection (``--dsn``), the site and ``--json``."""

    conn: argparse.ArgumentParser
    site: argparse.ArgumentParser
    out: argparse.ArgumentParser

    @property
    def site_json(self) -> list[argparse.ArgumentParser]:
        """A command on one site with a ``--json`` form."""
        return [self.conn, self.site, self.out]

    @classmethod
    def build(cls) -> Shared:
        conn = argparse.ArgumentParser(add_help=False)
        conn.add_argument(
            "--dsn",
            metavar="URL",
            help="sqlite:///path or postgresql://...; default: SYNC_SQL_URL or SYNC_SQL_*",
        )
        site = argparse.ArgumentParser(add_help=False)
        site.add_argument(
            "--site",
            default=None,
            help=(
                "the site (the Job's second argument; a Job given none is in SYNC_SITE, "
                "else 'default'); may be left out when there is only one"
            ),
        )
        out = argparse.ArgumentParser(add_help=False)
        out.add_argument("--json", action="store_true", help="machine-readable output")
        return cls(conn, site, out)
