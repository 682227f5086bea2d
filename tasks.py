"""`inv` tasks of this repository: the same collection the installed `rotation` command runs."""

from invoke import main
from invoke.exceptions import Exit, ParseError

from rotation.cli import configure_logging, explain
from rotation.tasks import namespace


def _suggest() -> None:
    """`inv rotat` answers as `rotation rotat` does, with the closest task: `inv` is Invoke's own
    program, which loads this file before it parses the task names."""
    parse = main.program.parse_tasks

    def parse_tasks() -> None:
        try:
            parse()
        except ParseError as exc:
            raise Exit(f"inv: {explain(str(exc), namespace.task_names, 'inv')}", 2) from None

    main.program.parse_tasks = parse_tasks  # type: ignore[method-assign]


configure_logging()
_suggest()
ns = namespace
