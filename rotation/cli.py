"""The `rotation` command: an Invoke program over the same tasks that `inv` finds in tasks.py.

It exposes only the options that make sense for it (help, version, the task list, completion,
`-q` for a cron job's log and `-f` for an environment's settings file). Invoke's other core flags
are gone, `--dry` above all: the dry run of this program is each task's own `--dry-run`.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import signal
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

from invoke.completion.complete import complete, print_completion_script
from invoke.exceptions import Exit, ParseError
from invoke.parser.argument import Argument
from invoke.program import Program

from . import __version__
from .errors import EXIT_CODES, did_you_mean
from .tasks import SHORT_FLAGS, namespace

__all__ = ["configure_logging", "explain", "main", "program"]

DESCRIPTION = """\
rotation: automated secret rotation for self-hosted Docker Compose stacks (self-hosted Supabase,
n8n and the rest of the local AI stack). It rotates secrets in every file that holds them and in
the live databases, all or nothing; recreates the services that read them, in dependency order,
each proven healthy; verifies the stack; and rolls everything back if any step fails.

Standard pipeline, run inside the stack directory:

  rotation rotate --dry-run                  see what would change; nothing is written
  rotation precheck rotate restart verify    rotate for real, with a health gate and rollback
"""
_DRY_FLAGS = ("--dry", "-R", "--dry-run", "-n")

# What each flag's value is, for `help TASK` (Invoke says STRING for every value).
_METAVARS = {
    "timeout": "SECONDS",
    **dict.fromkeys(("parallel", "limit", "version"), "N"),
    **dict.fromkeys(("config", "save", "compare", "file"), "FILE"),
    **dict.fromkeys(("secrets", "services"), "NAME,..."),
    "backup": "ID",
}
_SHORT = {letter: flag for flag, letter in SHORT_FLAGS.items()}
_FLAG_VALUE = re.compile(r"(--([a-z-]+)|-([a-z]))[ =]STRING")

EXAMPLES = {
    "rotate": (
        "rotation rotate --dry-run                        # the plan; nothing is written",
        "rotation rotate --secrets JWT_SECRET,DASHBOARD_PASSWORD",
        "rotation precheck rotate --due restart verify   # what is due, end to end, rolled back on failure",
    ),
    "restore": (
        "rotation restore --list",
        "rotation restore --latest --dry-run",
        "rotation restore --backup 20261206-031500 && rotation restart",
    ),
    "pull": ("rotation pull --dry-run", "rotation pull --version 7 && rotation restart verify"),
    "check": (
        "rotation check --verbose",
        "rotation check --save before.json   # later: rotation check --compare before.json",
    ),
    "precheck": ("rotation precheck rotate restart verify",),
    "restart": ("rotation restart", "rotation restart --services n8n,supabase-auth --timeout 300"),
    "verify": ("rotation verify", "rotation verify --no-rollback"),
    "due": ("rotation due", "rotation -q due --notify   # from cron: one message when something is due"),
    "log": ("rotation log --limit 50", "rotation log --json"),
    "guard": ("rotation guard                     # what git has staged", "rotation guard .env docker-compose.yml"),
    "recover": ("rotation recover",),
}


def _metavars(flags: str) -> str:
    """`-t STRING, --timeout=STRING` as `-t SECONDS, --timeout=SECONDS`."""

    def named(match: re.Match[str]) -> str:
        flag = match[2] or _SHORT.get(match[3] or "", "")
        return match[0].replace("STRING", _METAVARS.get(flag.replace("-", "_"), "VALUE"))

    return _FLAG_VALUE.sub(named, flags)


def configure_logging() -> None:
    """Progress of long waits as `rotation: ...` lines on stderr: the program's choice, not an import's."""
    logging.basicConfig(level=logging.INFO, format="rotation: %(message)s", stream=sys.stderr)


def _guard_words(words: list[str]) -> list[str]:
    """`guard [options] [--] FILE...` (as pre-commit calls it) in Invoke's words, each file a `--file=NAME`.

    Options are read only before the first file, and only the guard's own (`-c/--config`, `-h/--help`):
    from the first other word on, every word is a file, even one named `--help` or `--config=x.yaml`.
    Invoke reads a value that starts with `-` as a flag, so such a name is passed as `./NAME`.
    """
    out: list[str] = []
    at = 0
    while at < len(words):
        word = words[at]
        if word == "--":
            at += 1
            break
        if word in ("-c", "--config"):
            out += [word, words[at + 1] if at + 1 < len(words) else ""]
            at += 2
        elif word.startswith("--config=") or word in ("-h", "--help"):
            out.append(word)
            at += 1
        else:
            break
    return out + [f"--file=./{name}" if name.startswith("-") else f"--file={name}" for name in words[at:]]


def explain(message: str, tasks: Iterable[str], program: str = "rotation") -> str:
    """Invoke's parse error in our words, with the closest task or a pointer to --dry-run."""
    _, _, rest = message.partition("'")
    word = rest.rsplit("'", 1)[0] if rest else ""
    if not message.startswith("No idea what") or not word:
        return message
    if word in _DRY_FLAGS and program == "rotation":
        return f"'{word}' is not an option here; a dry run is the task's own flag: rotation TASK --dry-run"
    if word.startswith("-"):
        one = "rotation help TASK" if program == "rotation" else f"{program} --help TASK"
        return f"unknown option '{word}'; see {program} --help, or {one}"
    return f"unknown task '{word}'{did_you_mean(word, tasks)}; see {program} --list"


class RotationProgram(Program):
    """Invoke's `Program`, reduced to the options this tool needs and speaking its language."""

    def core_args(self) -> list[Argument]:
        return [
            Argument(names=("complete",), kind=bool, help="Print tab-completion candidates for given parse remainder."),
            Argument(
                names=("settings", "f"),
                help="Invoke settings file for an environment (rotation.root, rotation.config, ...); must exist.",
            ),
            Argument(names=("help", "h"), optional=True, help="Show this help, or a task's: -h TASK."),
            Argument(names=("list", "l"), optional=True, kind=bool, help="List the tasks."),
            Argument(
                names=("quiet", "q"),
                kind=bool,
                default=False,
                help="No progress lines and no notes, for a cron job's log: results, warnings and errors stay.",
            ),
            Argument(
                names=("print-completion-script",),
                kind=str,
                default="",
                help="Print the tab-completion script for your shell (bash|zsh|fish).",
            ),
            Argument(names=("version", "V"), kind=bool, default=False, help="Show the version and exit."),
        ]

    def run(self, argv: list[str] | None = None, exit: bool = True) -> None:  # noqa: A002 - Invoke's name
        """Run, and leave the next run in this process (a test's) as loud as ever."""
        try:
            super().run(argv, exit)
        finally:
            if getattr(self, "core", None) is not None and self.args.quiet.value:  # parsed, and quiet
                from . import present

                present.quiet(False)
                logging.getLogger().setLevel(logging.INFO)

    def normalize_argv(self, argv: list[str] | None) -> None:
        super().normalize_argv(argv)
        if len(self.argv) > 1 and self.argv[1] == "help":  # `rotation help TASK` as `rotation --help TASK`
            self.argv = [self.argv[0], "--help", *self.argv[2:3]]
        at = 1
        while at < len(self.argv) and self.argv[at].startswith("-"):  # core options come first
            at += 2 if self.argv[at] in ("-f", "--settings") else 1
        if self.argv[at : at + 1] == ["guard"]:
            self.argv = [*self.argv[: at + 1], *_guard_words(self.argv[at + 1 :])]

    def parse_core(self, argv: list[str] | None) -> None:
        self.normalize_argv(argv)
        self.parse_core_args()
        if self.args.quiet.value:  # the presenter is loaded for -q only: --help stays light
            from . import present

            present.quiet(True)
            logging.getLogger().setLevel(logging.WARNING)
        if self.args.version.value:
            self.print_version()
            raise Exit
        if self.args["print-completion-script"].value:
            print_completion_script(shell=self.args["print-completion-script"].value, names=self.binary_names)
            raise Exit

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(f"rotation: {self._explain(str(exc))}", 2) from None

    def _explain(self, message: str) -> str:
        return explain(message, self.collection.task_names, self.binary)

    def parse_cleanup(self) -> None:
        wanted = self.args.help.value
        if wanted is True:
            self.print_help()
            raise Exit
        if wanted:
            if wanted not in self.parser.contexts:
                problem = self._explain(f"No idea what '{wanted}' is!")
                raise Exit(f"rotation: {problem}", 2)
            self.print_task_help(wanted)
            raise Exit
        if self.args.list.value:
            self.list_format, self.list_depth = "flat", None
            self.list_tasks()
            raise Exit
        if self.args.complete.value:
            complete(
                names=self.binary_names,
                core=self.core,
                initial_context=self.initial_context,
                collection=self.collection,
                parser=self._make_parser(),
            )
        if not self.tasks:
            self.print_help()
            raise Exit

    def update_config(self, merge: bool = True) -> None:
        settings: str | None = self.args.settings.value or os.environ.get("INVOKE_RUNTIME_CONFIG")
        if settings and not Path(settings).expanduser().is_file():
            raise Exit(f"rotation: {settings}: no such settings file (-f)", 2)
        self.config.set_runtime_path(settings)  # type: ignore[arg-type]  # Invoke takes a str too
        self.config.load_runtime(merge=False)
        if merge:
            self.config.merge()

    def print_task_help(self, name: str) -> None:
        """`rotation help TASK`: what it does, its options with what each takes, and examples."""
        context = self.parser.contexts[name]
        print(f"Usage: {self.binary} [-f FILE] {name} [--options]\n")
        for paragraph in (inspect.getdoc(self.collection[name]) or "").split("\n\n"):
            print(textwrap.fill(" ".join(paragraph.split()), 96, initial_indent="  ", subsequent_indent="  ") + "\n")
        options = [(_metavars(flags), text) for flags, text in context.help_tuples()]
        if options:
            print("Options:\n")
            self.print_columns(options)
        print("Examples:\n")
        for example in EXAMPLES.get(name, ()):
            print(f"  {example}")
        print()

    def print_help(self) -> None:
        print(DESCRIPTION)
        print(f"Usage: {self.binary} [-f FILE] TASK [--task-options] [TASK ...]")
        print("       rotation help TASK      the options of one task\n")
        print("Options:\n")
        self.print_columns(self.initial_context.help_tuples())
        self.list_format, self.list_depth = "flat", None
        self.list_tasks()
        print("Exit codes:\n")
        for code, meaning in EXIT_CODES.items():
            print(textwrap.fill(meaning, 96, initial_indent=f"  {code}  ", subsequent_indent="     "))
        print()


program = RotationProgram(name="rotation", binary="rotation", namespace=namespace, version=__version__)


def main() -> None:
    """Entry point of the console script; a reader that closes the pipe early ends it quietly.

    Invoke turns a Ctrl-C outside any task (while parsing, listing, printing help) into a silent
    exit 1; the handler below notes the signal, so that such an exit says so and exits 130.
    """
    configure_logging()
    seen: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        program.run()
        sys.stdout.flush()
    except BrokenPipeError:
        from .present import quiet_stdout  # deferred: only a closed pipe needs it

        quiet_stdout()
        sys.exit(0)
    except SystemExit as done:
        if seen and done.code == 1:
            sys.stderr.write("rotation: interrupted; nothing was under way\n")
            sys.exit(130)
        raise
