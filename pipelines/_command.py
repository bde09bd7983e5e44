"""The one command runner: flags from the command's config dataclass, tracking, the run, the summary, errors.

A command module declares its options as a dataclass (fields with :func:`common.options.arg`; the shared
groups ``run: RunOptions``, segmenter, engine and registry options are nested dataclasses) and a
``run(cfg, ctx)`` that calls one library function and returns the summary; :class:`Command` does the rest::

    COMMAND = Command("predict_tabular", PredictTabularOptions, run, doc=__doc__, experiment="predict_tabular")
    main = COMMAND.main
    if __name__ == "__main__":
        COMMAND.exit()

``main(argv)`` parses the flags (and ``--config FILE``, :mod:`common.options`), sets up the tracking store
(:func:`common.tracking.setup_tracking`), calls ``prepare(cfg, ctx)`` (default: none; returns the library
config to log as the run's params), opens the run (:func:`common.tracking.tracked_run`: the options as
``config.json``, git commit, FAILED/KILLED on errors), calls ``run`` and prints the summary
(:func:`common.cli.print_summary`; ``--json``: one JSON object). User errors become one line and exit
status 2 (:func:`common.cli.run_main`). A command with ``experiment=None`` opens no MLflow run.

Converting a hand-written command (``build_parser`` + ``main``):

1. Each ``p.add_argument`` becomes a field of an options dataclass: ``name: type = arg(help, default=...)``
   (``type=positive_int`` etc. for checked values, ``Literal[...]`` for ``choices``, ``flag="--no-x"`` for a
   lone negative switch, ``positional=True``); shared flags become nested groups (``run: RunOptions =
   nested(RunOptions)``; ``SegmenterOptions``/``EngineOptions`` for the segmenter and engine flags); keep the
   help texts.
2. ``config_from_args`` becomes ``prepare(o, ctx)``: checks across flags raise ``UserError`` and it returns the
   library config (``fill(LibConfig, o, o.group, o.run, field=...)``) that the run logs as params.
3. The body of ``main`` inside ``tracked_run`` becomes ``run(o, ctx)``: it reads ``ctx.config``,
   ``ctx.tracking_uri``, logs progress with ``ctx.log``, says human lines with ``ctx.say`` and returns the summary
   (with ``files``: every path written); work after the run (registering) goes in ``finish``.
4. ``COMMAND = Command(name, Options, run, doc=__doc__, experiment=..., prepare=...)``, ``main = COMMAND.main``,
   ``COMMAND.exit()`` under ``__main__``; move heavy imports into the functions; drop the command from
   ``SLOW_HELP`` in ``tests/test_cli_startup.py``; tests call ``COMMAND.parse(argv)`` / ``COMMAND.call(argv)``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from common.cli import RunOptions, handle_sigterm, print_summary, progress_printer, quiet_third_party, run_main
from common.options import build_parser, parse_options

C = TypeVar("C")


@dataclasses.dataclass
class Context:
    """What ``run`` gets beside its options: where progress lines go, the store and the run."""

    log: Callable[[str], None] = print
    #: the tracking URI set up for this process (None for an untracked command)
    tracking_uri: str | None = None
    #: the active MLflow run (None for an untracked command)
    run: Any = None
    #: what ``prepare`` returned (the config logged as the run's params), else the options
    config: Any = None
    as_json: bool = False
    #: what the library function returned (for callers of :meth:`Command.call`)
    result: Any = None
    #: lines printed before the summary (not under --json): the human-readable result
    lines: list[str] = dataclasses.field(default_factory=list)

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run is not None else None

    def say(self, line: str) -> None:
        """A line of the human-readable result, printed before the summary (left out under ``--json``)."""
        self.lines.append(line)


def run_options(cfg: Any) -> RunOptions:
    """The ``run`` group of a command's options (``run: RunOptions``, else its top-level fields of those names)."""
    opts = getattr(cfg, "run", None)
    if isinstance(opts, RunOptions):
        return opts
    # a command that opens no run may take only some of them (tracking_uri, json, verbose) at its top level
    return RunOptions(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunOptions) if hasattr(cfg, f.name)})


def split_doc(doc: str | None) -> tuple[str, str | None]:
    """A module docstring as the parser's description (its first paragraph) and epilog (its examples)."""
    text = (doc or "").strip()
    paragraphs = text.split("\n\n")
    description = " ".join(line.strip() for line in paragraphs[0].splitlines()) if paragraphs else ""
    epilog = None
    marker = "Example"
    if marker in text:
        start = text.index(marker)
        block = text[start:].split("::", 1)
        if len(block) == 2:
            body = block[1].strip("\n")
            lines = []
            for line in body.splitlines():
                if line and not line.startswith("    "):
                    break
                lines.append(line[4:] if line.startswith("    ") else line)
            epilog = "examples:\n" + "\n".join("  " + ln if ln else ln for ln in lines).rstrip() + "\n"
            epilog = epilog.replace("\\\\\n", "\\\n")
    return description.replace("``", ""), epilog


@dataclasses.dataclass(frozen=True)
class Command(Generic[C]):
    """One ``python -m pipelines.<name>`` command (see the module docstring)."""

    name: str
    options: type[C]
    #: the command's work: calls one library function, returns the summary (None: print nothing)
    run: Callable[[C, Context], Mapping[str, Any] | None]
    doc: str | None = None
    #: the default MLflow experiment; None: the command opens no run
    experiment: str | None = None
    #: after tracking is set up, before the run opens: the config logged as params (a library config)
    prepare: Callable[[C, Context], Any] | None = None
    #: the model's name, say, for the run name
    name_hint: Callable[[C], str | None] | None = None
    #: a run id to continue instead of opening a new run (``--resume``)
    resume_run_id: Callable[[C, Any], str | None] | None = None
    #: whether to open the run at all for these options (e.g. torchrun ranks other than 0: no)
    tracked: Callable[[C], bool] | None = None
    #: after the run has ended (FINISHED): adds to the summary (registering the model, say)
    finish: Callable[[C, Context, dict[str, Any]], None] | None = None
    #: wraps the whole command (set-up and tear-down, e.g. torch.distributed)
    around: Callable[[C], contextlib.AbstractContextManager[Any]] | None = None

    @property
    def prog(self) -> str:
        return f"python -m pipelines.{self.name}"

    def parser(self) -> argparse.ArgumentParser:
        description, epilog = split_doc(self.doc)
        return build_parser(self.options, prog=self.prog, description=description, epilog=epilog)

    def parse(self, argv: Sequence[str] | None = None) -> C:
        """The options for ``argv`` (defaults, then ``--config FILE``, then the flags)."""
        return parse_options(self.options, self.parser(), argv)

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse, run and print the summary; exceptions propagate (:func:`common.cli.run_main` formats them)."""
        self.execute(self.parse(argv))
        return 0

    def call(self, argv: Sequence[str] | C, *, log: Callable[[str], None] | None = None, config: Any = None) -> Any:
        """Run on ``argv`` (or parsed options) and return what the library function returned (``ctx.result``);
        ``log`` receives the progress lines; ``config`` replaces what ``prepare`` would build (a library config
        with settings no flag reaches). For tests and scripts."""
        cfg = self.parse(argv) if isinstance(argv, list | tuple) else argv
        return self.execute(cfg, log=log, config=config)[1].result

    def execute(
        self, cfg: C, *, log: Callable[[str], None] | None = None, config: Any = None
    ) -> tuple[Mapping[str, Any], Context]:
        """Run the command on parsed options; prints and returns the summary and the context."""
        from common.seed import seed_everything  # noqa: PLC0415 - NumPy loads when the command runs: --help stays fast

        opts = run_options(cfg)
        ctx = Context(log=log or progress_printer(opts.json), as_json=opts.json)
        with self.around(cfg) if self.around is not None else contextlib.nullcontext():
            seed_everything(opts.seed)
            tracked = self.experiment is not None and (self.tracked is None or self.tracked(cfg))
            with self._tracking(cfg, ctx, tracked, config):
                returned = self.run(cfg, ctx)
            if returned is None:  # nothing to say (a torchrun rank other than 0)
                return {}, ctx
            summary = dict(returned)
            if ctx.run is not None and "run_id" not in summary:
                summary = {"run_id": ctx.run_id, **summary}
            if not opts.json:
                for line in ctx.lines:
                    print(line, flush=True)
            if self.finish is not None:
                self.finish(cfg, ctx, summary)
            print_summary(summary, as_json=opts.json)
        return summary, ctx

    @contextlib.contextmanager
    def _tracking(self, cfg: C, ctx: Context, tracked: bool, config: Any = None) -> Iterator[None]:
        opts = run_options(cfg)
        if not tracked:
            quiet_third_party(opts.verbose)
            handle_sigterm()
            ctx.config = config if config is not None else self.prepare(cfg, ctx) if self.prepare is not None else cfg
            yield
            return
        from common.tracking import setup_tracking, tracked_run  # noqa: PLC0415 - MLflow loads when the command runs

        ctx.tracking_uri = setup_tracking(opts.tracking_uri, verbose=opts.verbose)
        ctx.config = config if config is not None else self.prepare(cfg, ctx) if self.prepare is not None else cfg
        resume = self.resume_run_id(cfg, ctx.config) if self.resume_run_id is not None else None
        hint = self.name_hint(cfg) if self.name_hint is not None else None
        with tracked_run(
            opts.experiment or str(self.experiment),
            ctx.config,
            run_name=opts.run_name,
            name_hint=hint,
            resume_run_id=resume,
            options=cfg if ctx.config is not cfg else None,
        ) as run:
            ctx.run = run
            yield

    def exit(self) -> None:
        """``if __name__ == "__main__"``: run with ``sys.argv`` and exit with the command's status."""
        raise SystemExit(run_main(self.main, sys.argv[1:]))
