"""`inv` tasks of this repository: the same collection the installed `rotation` command runs."""

from rotation.cli import configure_logging
from rotation.tasks import namespace

configure_logging()
ns = namespace
