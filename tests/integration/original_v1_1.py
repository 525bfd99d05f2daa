"""Create the original jobsync 1.1's tables, by the 1.1.1 release's own code.

Run by the original's Python (it has psycopg): ``python original_v1_1.py WHEEL
DSN APPNAME``.  The 1.1.1 wheel's ``jobsync/schema.py`` is executed unchanged
from the wheel; its unpublished dependencies are stood in for: ``database``
(whose ``execute(cn, sql, *args)`` is all ``init_database`` calls) and the
``jobsync`` package's ``config`` module (``config.sync.sql.appname``).
"""

from __future__ import annotations

import sys
import types
import zipfile

import psycopg


def main() -> int:
    wheel, dsn, appname = sys.argv[1:4]
    source = zipfile.ZipFile(wheel).read("jobsync/schema.py").decode()
    database = types.ModuleType("database")
    database.execute = lambda cn, sql, *args: cn.execute(sql, args or None)  # type: ignore[attr-defined]
    config = types.SimpleNamespace(
        sync=types.SimpleNamespace(sql=types.SimpleNamespace(appname=appname))
    )
    package = types.ModuleType("jobsync")
    package.config = config  # type: ignore[attr-defined]
    package.__path__ = []  # type: ignore[attr-defined]
    sys.modules.update({"database": database, "jobsync": package})
    schema = types.ModuleType("jobsync.schema")
    exec(compile(source, "jobsync-1.1.1/jobsync/schema.py", "exec"), schema.__dict__)
    with psycopg.connect(dsn, autocommit=True) as cn:
        schema.init_database(cn, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
