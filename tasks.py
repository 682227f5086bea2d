"""`inv` tasks of this repository: the same collection the installed `rotation` command runs."""

from rotation.tasks import namespace

ns = namespace
