"""The jobsync error tree; see :mod:`jobsync.core.errors` for the drawing."""

from jobsync.core.errors import *  # noqa: F403
from jobsync.core.errors import __all__ as __all__
