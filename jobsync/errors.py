"""The jobsync error tree; see :mod:`jobsync.core.errors` for the drawing.

Every name of ``jobsync.core.errors.__all__`` is re-exported here, so a new
error class is added in one place.
"""

from jobsync.core import errors as _core
from jobsync.core.errors import *  # noqa: F403

__all__ = list(_core.__all__)
