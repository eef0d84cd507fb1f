"""The `lsq-sync` command line: loads config, builds objects, maps errors to exit codes."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, get_args

import click

from lsq_sync.cli.render import safe
from lsq_sync.errors import ConfigError, LockedError, LsqSyncError, RunFailed
from lsq_sync.leadsquared.fields import EDITABLE, NOTIFY
from lsq_sync.states import EditStatus, LeadState, LogFormat, LogLevel

# Only what every invocation needs is imported here: `lsq-sync --help` must not pay for
# SQLAlchemy, httpx and structlog. Each command imports what it uses.
from lsq_sync.version import __version__

# Ids are INTEGER columns and counts reach SQL LIMITs: a number past them is a usage
# error (exit 2), not a driver's overflow.
ROW_ID = click.IntRange(1, 2**31 - 1)
COUNT = click.IntRange(1, 2**31 - 1)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from lsq_sync import config as config_mod
    from lsq_sync.core import app
    from lsq_sync.core.result import RunResult

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_ABORTED, EXIT_LOCKED = 0, 1, 2, 3, 75


def exit_code(exc: BaseException) -> int:
    """ConfigError 2, LockedError 75, anything else that aborted a command 3."""
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, LockedError):
        return EXIT_LOCKED
    return EXIT_ABORTED


@dataclass
class Settings:
    config_path: str | None
    log_format: str | None
    log_level: str | None
    no_color: bool = False
    _config: config_mod.Config | None = None
    tty: bool = False  # stderr is a terminal (known once logging is set up)

    def config(self) -> config_mod.Config:
        from lsq_sync import config as config_mod
        if self._config is None:
            self._config = config_mod.load(self.config_path)
        return self._config

    def configured(self) -> config_mod.Config:
        """The config, with logging set up from it: every command's first step."""
        cfg = self.config()
        self.tty = self.setup_logging(cfg)
        return cfg

    def store(self) -> Engine:
        """The tasks database at the current schema (or an error saying why not)."""
        from lsq_sync.core import app
        return app.open_store(self.configured())

    def database(self) -> Engine:
        """The tasks database, reachable, whatever its schema (for the db commands)."""
        from lsq_sync.store import db
        engine = db.make_engine(self.configured().database.url)
        db.check_connection(engine)
        return engine

    def setup_logging(self, cfg: config_mod.Config | None = None) -> bool:
        """Configure logging for the command; returns True when stderr is a terminal."""
        from lsq_sync import logs
        fmt = self.log_format or (cfg.log.format if cfg else "auto")
        level = self.log_level or (cfg.log.level if cfg else "info")
        logs.configure(fmt, level, secrets=cfg.secrets() if cfg else (),
                       no_color=self.no_color)
        return logs.wants_console("auto", sys.stderr)


class Group(click.Group):
    """Turns lsq-sync's errors into one line and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from lsq_sync import logs
        try:
            return super().invoke(ctx)
        except LsqSyncError as exc:
            fail(str(exc), exit_code(exc), _secrets(ctx))
        except KeyboardInterrupt:
            fail("interrupted; what was finished is saved, the next run continues", EXIT_PARTIAL)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # `lsq-sync runs | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_OK)
        except Exception as exc:  # a bug: one line here, the (redacted) traceback in the log
            logs.get_logger("lsq_sync").error("internal_error", exc_info=True)
            fail(f"internal error ({type(exc).__name__}); please report it with the "
                 f"`internal_error` log event above", EXIT_ABORTED)


def graceful(ctx: app.Context) -> app.Context:
    """SIGINT or SIGTERM: stop taking work and finish cleanly; a second one stops at once."""
    from lsq_sync import logs
    from lsq_sync.control import StopReason
    received: list[int] = []  # the run may be stopping already (its call cap): that is no signal

    def handler(signum: int, _frame: Any) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        ctx.stop.set(StopReason.SIGNAL)
        logs.get_logger("lsq_sync").warning("stop_requested", signal=signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return ctx


def _secrets(ctx: click.Context) -> list[str]:
    settings = ctx.find_object(Settings)
    return settings._config.secrets() if settings and settings._config else []


def _say_preview(found: Any) -> None:
    from lsq_sync.cli import dryrun
    for line in dryrun.preview(found):
        click.echo(safe(line))


def run_exit(result: RunResult, tty: bool) -> NoReturn:
    """0 all done (or a planned stop at the call cap); 1 failures or a stop by signal.

    On a terminal the run ends with one sentence saying what it did; a run that exits 1
    ends with one line saying what failed and where to look."""
    if tty:
        click.echo(result.summary())
    try:
        result.raise_for_status()
    except RunFailed as exc:
        fail(str(exc), EXIT_PARTIAL, run_id=result.run_id)
    sys.exit(EXIT_OK)


def fail(message: str, code: int, secrets: list[str] | None = None,
         run_id: int | None = None) -> NoReturn:
    """The command's last word: one line on stderr, a JSON event when logs are JSON (with
    the run's id, when there was a run)."""
    from lsq_sync import logs
    from lsq_sync.redact import redact, secret_forms
    if secrets:
        message = redact(message, secret_forms(secrets))
    if logs.json_mode():
        about = {"run_id": run_id} if run_id is not None else {}
        logs.get_logger("lsq_sync").error("exit", exit_code=code, message=message, **about)
    else:
        click.echo(f"lsq-sync: {message}", err=True)
    sys.exit(code)


pass_settings = click.make_pass_decorator(Settings)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"],
                                          "max_content_width": 100})
@click.option("--config", "config_path", metavar="PATH", envvar=None,
              help="TOML config file. Default: $LSQ_SYNC_CONFIG, else ./lsq_sync.toml.")
@click.option("--log-format", type=click.Choice(get_args(LogFormat)),
              help="Override [log].format: console on a TTY and JSON lines otherwise (auto).")
@click.option("--log-level", type=click.Choice(get_args(LogLevel)),
              help="Override [log].level.")
@click.option("--quiet", "-q", is_flag=True,
              help="Log only warnings and errors; the progress bar and the closing sentence "
                   "stay (same as --log-level warning).")
@click.option("--no-color", is_flag=True,
              help="No colours in console logs (NO_COLOR does the same; FORCE_COLOR forces "
                   "them).")
@click.version_option(__version__, prog_name="lsq-sync")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_format: str | None,
        log_level: str | None, quiet: bool, no_color: bool) -> None:
    """Sync LeadSquared tasks into a SQL database and push local edits back.

    \b
    Exit status: 0 all done; 1 the run finished but some leads or edits
    failed (or `status --max-age` found the data stale); 2 bad usage or
    configuration; 3 aborted (credentials rejected, API host or database
    unreachable, schema not current); 75 another run holds the lock.
    """
    from lsq_sync import logs
    logs.forget()
    if quiet and log_level is not None:
        raise click.UsageError("--quiet and --log-level: give one of them")
    ctx.obj = Settings(config_path, log_format, "warning" if quiet else log_level, no_color)


@cli.group("config", cls=Group)
def config_group() -> None:
    """The configuration as lsq-sync sees it."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@pass_settings
def config_show(settings: Settings, as_json: bool) -> None:
    """Print the effective configuration: every key, its value and where it came from
    (default, the file, or the environment: LSQ_SYNC__SECTION__KEY, or the older
    LSQ_ACCESS_KEY, LSQ_SECRET_KEY, LSQ_SYNC_DATABASE_URL). Secrets are masked, and so are
    the passwords in database URLs."""
    from dataclasses import fields as fields_of

    from lsq_sync.config import SCHEMA, Secret
    from lsq_sync.store.db import safe_url
    cfg = settings.config()
    shown: dict[str, dict[str, dict[str, Any]]] = {}
    for name in SCHEMA:
        section = getattr(cfg, name)
        for f in fields_of(section):
            value = getattr(section, f.name)
            if isinstance(value, Secret):
                value = "***" if value else ""
            elif f.name == "url" and value:
                value = safe_url(value)
            shown.setdefault(name, {})[f.name] = {
                "value": value, "from": cfg.origins.get(f"{name}.{f.name}", "default")}
    if as_json:
        click.echo(json.dumps({"source": cfg.source, "config": shown}))
        return
    click.echo(f"# {safe(cfg.source)}")
    for name, keys in shown.items():
        click.echo(f"[{name}]")
        for key, item in keys.items():
            click.echo(safe(f"{key} = {json.dumps(item['value'])}  # {item['from']}"))


@cli.command()
@click.argument("path", required=False, default="lsq_sync.toml",
                type=click.Path(dir_okay=True, path_type=Path))
def init(path: Path) -> None:
    """Write a commented config file to start from (default ./lsq_sync.toml).

    Every key is there with its default and what it does. An existing file is
    never overwritten. Then: set [lsq] base_url and the keys, [database] url
    and [leads] query, run `lsq-sync db upgrade` and `lsq-sync doctor`.
    """
    from lsq_sync import config as config_mod
    written = config_mod.write_example(path)
    click.echo(f"wrote {written}; set [lsq] base_url and the keys (or $LSQ_ACCESS_KEY and "
               f"$LSQ_SECRET_KEY), [database] url and [leads] query, then run "
               f"`lsq-sync db upgrade` and `lsq-sync doctor`")


# -- db ------------------------------------------------------------------------------------

@cli.group(cls=Group)
def db_group() -> None:
    """Create, migrate and inspect the database schema."""


cli.add_command(db_group, "db")


@db_group.command("upgrade")
@pass_settings
def db_upgrade(settings: Settings) -> None:
    """Create the tables, or migrate them to this version's schema.

    Safe to run at any time: a current schema is left as it is.
    """
    from lsq_sync.store import db, schema
    engine = settings.database()
    before, after = schema.upgrade(engine)
    where = db.safe_url(engine.url)
    if before == after:
        click.echo(f"{where}: schema already at revision {after}")
    else:
        click.echo(f"{where}: schema upgraded from {before or 'nothing'} to revision {after}")


@db_group.command("current")
@pass_settings
def db_current(settings: Settings) -> None:
    """Print the database's schema revision and whether it is current."""
    from lsq_sync.store import schema
    engine = settings.database()
    rev = schema.current(engine)
    head = schema.head()
    if rev is None:
        click.echo(f"none (this version needs {head}; run `lsq-sync db upgrade`)")
    elif rev == head:
        click.echo(f"{rev} (current)")
    else:
        click.echo(f"{rev} (this version needs {head}; run `lsq-sync db upgrade`)")


@db_group.command("check")
@pass_settings
def db_check(settings: Settings) -> None:
    """Exit 0 only when the schema is current (for scripts and deploy checks); else say
    why in one line and exit 3."""
    from lsq_sync.store import db, schema
    engine = settings.database()
    schema.require_current(engine)
    click.echo(f"{db.safe_url(engine.url)}: schema at revision {schema.head()} (current)")


# -- pull ----------------------------------------------------------------------------------

def _lead_ids(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
              ) -> tuple[str, ...]:
    from lsq_sync.store.leads import check_lead_id
    checked = []
    for value in values:
        lead_id, why = check_lead_id(value)
        if lead_id is None:
            raise click.BadParameter(f"--lead-id {value!r} is not a GUID ({why}); LeadSquared "
                                     f"lead ids look like 5a1b2c3d-0000-4000-8000-00000000abcd")
        checked.append(lead_id)
    return tuple(checked)


def pull_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--lead-id, --limit, --calls, --restart, --full and --hints, shared by pull and
    sync."""
    for option in reversed([
        click.option("--lead-id", "lead_ids", multiple=True, metavar="ID", callback=_lead_ids,
                     help="Pull only this lead (repeatable) instead of the leads from "
                          "[leads].query. Never moves :last_success."),
        click.option("--limit", type=COUNT, metavar="N",
                     help="Pull at most N leads (the first N the query returns). Never "
                          "moves :last_success, and resumes no interrupted pull."),
        click.option("--restart", is_flag=True,
                     help="Start from the top: ignore what an interrupted pull left to do."),
        click.option("--calls", type=COUNT, metavar="N",
                     help="Make at most N API calls in this run (under [lsq]."
                          "max_calls_per_run); a pass stopped there is continued by the "
                          "next pull."),
        click.option("--full", is_flag=True,
                     help="A full refresh: a new pass over the whole leads query, with "
                          ":last_success bound to NULL (as before the first pass)."),
        click.option("--hints", is_flag=True,
                     help="Pull exactly the leads with pending webhook hints (see `listen`), "
                          "oldest hint first; with --limit, the first N of them."),
    ]):
        command = option(command)
    return command


@cli.command()
@pull_options
@pass_settings
def pull(settings: Settings, lead_ids: tuple[str, ...], limit: int | None,
         calls: int | None, restart: bool, full: bool, hints: bool) -> None:
    """Fetch the tasks of every lead and upsert them into lsq_tasks.

    The lead ids come from [leads].query (first column) on [leads].url, or from
    --lead-id. Tasks missing from a lead's answer get deleted_at set; tasks that
    come back have it cleared. Requests run concurrently, never faster than
    [lsq].rate_limit_calls per [lsq].rate_limit_period_s. A lead that fails
    changes nothing and makes the exit status 1.

    \b
    A pull without --lead-id or --limit is a pass over the query. A pass that
    was killed, stopped or capped is continued by the next pull, which first
    does the leads it left, then the rest (--restart ignores it). The query
    may use :last_success, the start of the last complete pass (NULL before
    the first), to select only the leads changed since: a change recorded in
    the leads table is pulled by the end of the next complete pass, whatever
    was stopped, capped or run by hand. Leads that failed are tried again by
    the next passes (up to 5 in a row) even if the query drops them.
    SIGINT/SIGTERM stop it cleanly within seconds (exit 1).

    \b
    --hints pulls only the leads LeadSquared's webhooks named (lsq_lead_hints,
    filled by `lsq-sync listen`), for setups where listen does not pull
    itself ([listen] pull = false). A hint is consumed by a fetch of its lead
    sent after the hint arrived; of two fetches of one lead, the one sent
    later is what lsq_tasks keeps.
    """
    from lsq_sync.core import app
    from lsq_sync.core.pull import PullOptions
    cfg = settings.configured()
    tty = settings.tty
    options = PullOptions(lead_ids=list(lead_ids) or None, limit=limit, restart=restart,
                          full=full, calls=calls, hints=hints)
    run_exit(app.pull(cfg, options, graceful(app.Context(tty=tty))), tty)


# -- push, sync, edit ----------------------------------------------------------------------

@cli.command()
@click.option("--dry-run", is_flag=True,
              help="Read each task from LeadSquared, then print its merge and the request "
                   "body it would send (no credentials); send and change nothing.")
@click.option("--offline", is_flag=True,
              help="With --dry-run: merge against the synced state in lsq_tasks instead of "
                   "reading the API (no call, no keys needed).")
@pass_settings
def push(settings: Settings, dry_run: bool, offline: bool) -> None:
    """Send pending edits from lsq_task_edits through Task.svc/Update.

    Right before a task's Update, the push reads the task's lead again (one
    RetrieveTaskByLeadId call serves every task of that lead) and merges
    field by field: fields no edit touches are sent as LeadSquared holds them
    now; an edited field goes as edited unless LeadSquared changed it too
    since the edit was made, which is a conflict settled by
    [push].on_conflict (skip: hold the edits as `conflict`; local: send
    anyway; remote: keep LeadSquared's value). A task deleted or moved in
    LeadSquared is held as `conflict`. A task's edits merge in order (later
    values win) into one call. Sent edits become `sent` and lsq_tasks takes
    the merged state at once; rejected or invalid ones become `failed` with
    last_error; transient failures stay `pending` until
    [push].max_edit_attempts runs have tried. `lsq-sync edits` shows the
    queue. Exit status 1 when any edit failed or conflicted in this run.
    """
    from lsq_sync.core import app
    cfg = settings.configured()
    tty = settings.tty
    if offline and not dry_run:
        raise click.UsageError("--offline goes with --dry-run")
    if dry_run:
        shown = app.preview_push(cfg, _say_preview, offline=offline,
                                 ctx=graceful(app.Context(tty=tty)))
        against = "the synced state" if offline else "what LeadSquared holds now"
        click.echo(f"dry run against {against}: {shown} task update(s) would be sent; "
                   f"nothing was sent or changed")
        return
    run_exit(app.push(cfg, graceful(app.Context(tty=tty))), tty)


@cli.command()
@pull_options
@pass_settings
def sync(settings: Settings, lead_ids: tuple[str, ...], limit: int | None,
         calls: int | None, restart: bool, full: bool, hints: bool) -> None:
    """Push pending edits, then pull every lead's tasks, in one run.

    Push goes first so that local edits reach LeadSquared before the pull
    reads it back: the same run then confirms them, and a pull never works on
    a state that is about to change. Both share one rate budget.
    """
    from lsq_sync.core import app
    from lsq_sync.core.pull import PullOptions
    cfg = settings.configured()
    tty = settings.tty
    options = PullOptions(lead_ids=list(lead_ids) or None, limit=limit, restart=restart,
                          full=full, calls=calls, hints=hints)
    run_exit(app.sync(cfg, options, graceful(app.Context(tty=tty))), tty)


@cli.command()
@click.option("--host", metavar="H", help="Address to bind (default [listen].host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), metavar="N",
              help="Port to bind (default [listen].port, 8780; 0: any free port).")
@pass_settings
def listen(settings: Settings, host: str | None, port: int | None) -> None:
    """Receive LeadSquared's task webhooks as hints, and pull those leads.

    \b
    POST [listen].path (default /lsq/webhook) with the header [listen].header
    set to [listen].secret (env LSQ_WEBHOOK_SECRET): bodies in JSON, form or
    text encoding naming a lead (RelatedEntityId, LeadId, ProspectId) or a
    task (UserTaskId, TaskId). Each is committed to lsq_lead_hints before the
    200 answer. Answers: 401 wrong or missing secret; 413 body over
    [listen].max_body_kb; 503 the database cannot take it; 200 {"ok": false}
    for a body that names no lead. GET /healthz: 200 while the database
    answers.

    \b
    With [listen] pull = true (the default) it pulls hinted leads within
    seconds, oldest hint first, from the same rate budget as every other run
    (one run row, command listen, under its own lock: beside a pass and the
    cron push). With pull = false, `lsq-sync pull --hints` does it from cron.
    Binds 127.0.0.1 by default: put a reverse proxy with TLS in front (see
    the README). SIGTERM or SIGINT stop it cleanly (exit 0); a restart takes
    up the hints still pending.
    """
    from lsq_sync.core import app
    from lsq_sync.listen import service
    cfg = settings.configured()

    def ready(where: service.Listening) -> None:
        if settings.tty:
            click.echo(f"listening on {where.url} (Ctrl-C stops)", err=True)

    result = service.serve(cfg, graceful(app.Context(tty=settings.tty)), host=host,
                           port=port, on_ready=ready)
    if result is not None and result.counts.failures:
        # Leads that failed stay hinted and are tried again; the listener itself did its job.
        click.echo(result.summary(), err=True)
    sys.exit(EXIT_OK)


@cli.command()
@click.option("--sample", type=COUNT, default=100, show_default=True, metavar="N",
              help="Leads drawn at random from [leads].query (one API call each).")
@click.option("--seed", type=click.IntRange(min=0), metavar="N",
              help="Seed of the draw, for a repeatable sample.")
@click.option("--json", "as_json", is_flag=True, help="The estimate as one JSON object.")
@click.option("--max-stale", type=click.FloatRange(0, 1), metavar="SHARE",
              help="Exit 1 when the 95% interval's upper bound of the stale share of tasks "
                   "exceeds SHARE (e.g. 0.02): an alert for monitoring.")
@pass_settings
def verify(settings: Settings, sample: int, seed: int | None, as_json: bool,
           max_stale: float | None) -> None:
    """Measure how stale the mirror is: a drift audit of a random sample.

    \b
    Draws N leads uniformly at random (without replacement) from
    [leads].query, fetches each, and compares its tasks field by field with
    lsq_tasks before writing anything: a task is stale when it is missing
    here, deleted there, or differs in any field. Reports the share of stale
    tasks with a 95% interval (a ratio estimator over the sampled leads, which
    are clusters of tasks, with the finite-population correction; see
    docs/freshness.md) and the share of leads with a stale task (Wilson
    interval); then writes what it fetched, as a pull would. The estimate is
    kept (lsq_verify_results) for `status` and the metrics file.
    """
    from lsq_sync.core import app
    cfg = settings.configured()
    tty = settings.tty
    result = app.verify(cfg, sample=sample, seed=seed, ctx=graceful(app.Context(tty=tty)))
    found = result.drift or {}
    if as_json:
        click.echo(json.dumps({"run_id": result.run_id, "status": result.status, **found}))
    else:
        click.echo(result.summary())
        kinds = ", ".join(f"{found.get(k, 0)} {k}" for k in ("missing", "deleted", "differing"))
        click.echo(f"stale tasks: {found.get('stale_tasks', 0)} of {found.get('tasks', 0)} "
                   f"sampled ({kinds})")
    if max_stale is not None and found and found["stale_high"] > max_stale:
        fail(f"stale: up to {found['stale_high']:.2%} of tasks may be stale (95% upper bound), "
             f"over --max-stale {max_stale:.2%}; see `lsq-sync runs show {result.run_id}`",
             EXIT_PARTIAL, run_id=result.run_id)
    run_exit(result, False)


def _as_utc_text(value: str) -> str:
    """A date as people type it (2026-02-01T10:00, 2026-02-01 10:00:00, with an offset or
    Z) as `YYYY-MM-DD HH:MM:SS` in UTC; anything else as given, for the check to name."""
    from datetime import UTC, datetime
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return value
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def _edit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`lsq-sync edit`'s options, one per editable field of leadsquared/fields.py."""
    for f in reversed(EDITABLE):
        assert f.option is not None
        if f.kind == "notify":
            command = click.option(f.option, f.column, default=None, help=f.help)(command)
        else:
            command = click.option(f.option, f.column, metavar=f.metavar, help=f.help,
                                   type=int if f.kind == "minutes" else str)(command)
    return command


@cli.command()
@click.argument("task_id")
@_edit_options
@pass_settings
def edit(settings: Settings, /, task_id: str, **fields: Any) -> None:
    """Queue an edit of a task in lsq_task_edits; `lsq-sync push` sends it.

    Only the given fields change: the push reads the task again and sends
    every other field as LeadSquared holds it then. The edit records the
    synced state it was made against, so that a field changed in LeadSquared
    since then is caught as a conflict. The task must have been pulled.
    """
    from lsq_sync.core import merge
    notify = fields.get(NOTIFY)
    fields[NOTIFY] = None if notify is None else ("1100" if notify else "1000")
    for f in EDITABLE:
        if f.kind == "date" and fields.get(f.column):
            fields[f.column] = _as_utc_text(fields[f.column])
    edit_id = merge.queue(settings.store(), task_id, fields)
    click.echo(safe(f"queued edit {edit_id} for task {task_id}; `lsq-sync push` sends it"))


# -- runs ----------------------------------------------------------------------------------

# Narrow enough for an 80-column terminal: leads are ok/failed/total, tasks +written/-deleted,
# edits sent/failed, thr the throttle answers; the error takes what is left of the line.
RUN_COLUMNS = ["id", "cmd", "status", "started UTC", "secs", "leads", "tasks", "edits",
               "calls", "thr"]
WIDTH = 80


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


@cli.group("runs", cls=Group, invoke_without_command=True)
@click.option("--limit", type=COUNT, default=20, show_default=True,
              help="How many runs to show, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run, per line.")
@click.pass_context
def runs_cmd(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List recent runs with their counts and status, newest first.

    `lsq-sync runs show ID` prints one run in full, with its failed leads.
    """
    from lsq_sync.cli.render import table
    from lsq_sync.store import runs
    if ctx.invoked_subcommand is not None:
        return
    settings: Settings = ctx.obj
    engine = settings.store()
    rows = runs.recent(engine, limit)
    if as_json:
        for r in rows:
            click.echo(json.dumps(_jsonable(r)))
        return
    if not rows:
        click.echo("no runs yet")
        return
    lines = []
    for r in rows:
        secs = runs.duration(r["started_at"], r["finished_at"])
        lines.append([
            r["id"], r["command"], r["status"], r["started_at"].strftime("%m-%d %H:%M"),
            f"{secs:.0f}" if secs is not None else "-",
            f"{r['leads_ok']}/{r['leads_failed']}/{r['leads_total']}",
            f"+{r['tasks_upserted']}/-{r['tasks_deleted']}",
            f"{r['edits_sent']}/{r['edits_failed']}", r["api_calls"], r["throttled"]])
    header, *body = table(lines, RUN_COLUMNS)
    click.echo(header)
    for line, r in zip(body, rows, strict=True):
        # The error, made safe, in what the line has left (the whole: `runs show ID`).
        room = WIDTH - len(line) - 2
        error = safe((r["error"] or "").replace("\n", " "))
        if len(error) > room:
            error = f"{error[:room - 1]}…" if room > 1 else ""
        click.echo(f"{line}  {error}".rstrip())


# What a run of each command never sets, left out of `runs show` (its --json keeps all).
_PULL_FIELDS = ("leads_total", "leads_ok", "leads_failed", "leads_skipped", "tasks_deleted",
                "tasks_skipped", "pass_started_at", "pass_since", "pass_complete")
_NOT_FOR = {"push": _PULL_FIELDS, "pull": ("edits_sent", "edits_failed", "edits_conflict")}


@runs_cmd.command("show")
@click.argument("run_id", type=ROW_ID)
@click.option("--json", "as_json", is_flag=True, help="As one JSON object.")
@pass_settings
def runs_show(settings: Settings, run_id: int, as_json: bool) -> None:
    """Print one run: every count, its error, and the leads that failed and why."""
    from lsq_sync.store import edit_queue, runs, worklist
    engine = settings.store()
    row = runs.get(engine, run_id)
    if row is None:
        raise ConfigError(f"there is no run {run_id}; `lsq-sync runs` lists them")
    failed = worklist.failed(engine, run_id)
    partial = worklist.failed(engine, run_id, state=LeadState.PARTIAL)
    held = edit_queue.of_run(engine, run_id)
    if as_json:
        click.echo(json.dumps({**_jsonable(row), "failed_leads": failed,
                               "leads_with_skipped_tasks": partial, "failed_edits": held}))
        return
    left_out = _NOT_FOR.get(row["command"], ())
    for key, value in row.items():
        if key in left_out:
            continue
        shown = value.strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(value, "strftime") else value
        click.echo(f"{key:15s} {safe(shown)}")
    if failed:
        click.echo(f"failed leads ({len(failed)}):")
        for lead in failed:
            streak = f" (failed {lead['failures']} pulls in a row)" if lead["failures"] else ""
            click.echo(f"  {safe(lead['lead_id'])}  {safe(lead['error'])}{streak}")
    if partial:
        click.echo(f"leads with bad tasks skipped ({len(partial)}); each keeps its last "
                   f"good row:")
        for lead in partial:
            click.echo(f"  {safe(lead['lead_id'])}  {safe(lead['error'])}")
    if held:
        click.echo(f"failed or conflicting edits ({len(held)}):")
        for item in held:
            click.echo(f"  edit {item['id']} of task {safe(item['task_id'])}  "
                       f"{safe(item['status'])}: {safe(item['last_error'])}")


# -- edits ---------------------------------------------------------------------------------

EDIT_STATUSES = [s.value for s in EditStatus]


@cli.group("edits", cls=Group, invoke_without_command=True)
@click.option("--status", type=click.Choice(EDIT_STATUSES), help="Only edits in this state.")
@click.option("--task", "task_id", metavar="ID", help="Only the edits of this task.")
@click.option("--limit", type=COUNT, default=100, show_default=True,
              help="How many edits to show, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per edit, per line.")
@click.pass_context
def edits_cmd(ctx: click.Context, status: str | None, task_id: str | None, limit: int,
              as_json: bool) -> None:
    """List the edit queue (lsq_task_edits), newest first.

    \b
    Statuses: pending (waits for a push), sent, failed (rejected, invalid or
    out of attempts), conflict (changed in LeadSquared too, or the task was
    deleted or moved there), cancelled. `edits retry` and `edits cancel`
    act on them.
    """
    from lsq_sync.store import edit_queue
    if ctx.invoked_subcommand is not None:
        return
    settings: Settings = ctx.obj
    rows = edit_queue.listing(settings.store(), status=status, task_id=task_id, limit=limit)
    if as_json:
        for r in rows:
            click.echo(json.dumps(_jsonable(r)))
        return
    if not rows:
        click.echo("no edits" + (" with that filter" if status or task_id else " queued yet"))
        return
    for r in rows:
        fields = ", ".join(f"{k}={v!r}" for k, v in r["fields"].items())
        click.echo(safe(f"{r['id']:>6}  {r['task_id']}  {r['status']:<9}  attempts "
                        f"{r['attempts']}  created {_when(r['created_at'], '-')}  sent "
                        f"{_when(r['sent_at'], '-')}  {fields}"))
        if r["last_error"]:
            click.echo(f"        {safe(r['last_error'])}")



@edits_cmd.command("retry")
@click.argument("ids", nargs=-1, type=ROW_ID)
@click.option("--failed", is_flag=True, help="Every failed edit.")
@click.option("--conflicts", is_flag=True, help="Every edit held as a conflict.")
@pass_settings
def edits_retry(settings: Settings, ids: tuple[int, ...], failed: bool, conflicts: bool) -> None:
    """Make failed or conflicting edits pending again, for the next push.

    Their attempts start again from 0, and each takes the synced state of its
    task now as its base: pull first, so that a conflict is judged against
    what LeadSquared holds.
    """
    from lsq_sync.store import edit_queue
    if not (ids or failed or conflicts):
        raise click.UsageError("name the edits to retry: IDs, --failed or --conflicts")
    count = edit_queue.retry(settings.store(), ids, failed=failed, conflicts=conflicts)
    click.echo(f"{count} edit(s) pending again; `lsq-sync push` sends them"
               + ("" if count or not ids else " (sent and cancelled edits are not retried)"))


@edits_cmd.command("cancel")
@click.argument("ids", nargs=-1, type=ROW_ID, required=True)
@pass_settings
def edits_cancel(settings: Settings, ids: tuple[int, ...]) -> None:
    """Mark edits cancelled: they are never sent. Sent edits stay sent."""
    from lsq_sync.store import edit_queue
    count = edit_queue.cancel(settings.store(), ids)
    click.echo(f"{count} edit(s) cancelled" + ("" if count == len(set(ids)) else
                                               "; the others were already sent or cancelled"))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.option("--max-age", metavar="DURATION",
              help="Exit 1 when the last successful pull finished longer ago than this "
                   "(e.g. 30m, 2h, 1d): a check for monitoring.")
@pass_settings
def status(settings: Settings, as_json: bool, max_age: str | None) -> None:
    """Freshness and health: per command the last run and the last success, the edit
    queue by status, the leads that keep failing, pending webhook hints (and the
    age of the oldest), webhooks by how `listen` answered them, the last
    verify's estimate of stale tasks with its bounds, and runs under way.

    A pull counts as a success when it succeeded or completed its pass (a pass
    whose only failures are leads kept for retry). With --max-age, exit 1 when
    the last successful pull is older, with one line saying how old.
    """
    from lsq_sync.config import parse_duration
    from lsq_sync.store import health
    limit = parse_duration(max_age) if max_age is not None else None
    report = health.report(settings.store())
    problem = health.stale(report, limit) if limit is not None else None
    if as_json:
        click.echo(json.dumps({**report, "stale": problem}, default=_iso))
    else:
        for line in _status_lines(report):
            click.echo(line)
    if problem is not None:
        fail(f"stale: {problem}; see `lsq-sync runs`", EXIT_PARTIAL)


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _when(value: Any, none: str = "never") -> str:
    """A stored time as people read it; what another system wrote that is no time, as is."""
    if value is None:
        return none
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(value, "strftime") else str(value)


def _status_lines(report: dict[str, Any]) -> list[str]:
    """`status` for people: every time is when something finished, with its age."""
    from lsq_sync.store.health import ago
    lines = []
    for command, info in report["commands"].items():
        run = info["last_run"]
        if run is None:
            lines.append(f"{command:6s} never run")
            continue
        took = f" in {run['duration_s']:.1f} s" if run["duration_s"] is not None else ""
        done = (f"finished {_when(run['finished_at'])} ({ago(run['finished_at'])} ago){took}"
                if run["finished_at"] else f"running since {_when(run['started_at'])}")
        success = info["last_success_at"]
        lines.append(f"{command:6s} last run {run['id']} {run['status']}, {done}; last "
                     f"success " + (f"{_when(success)} ({ago(success)} ago)" if success
                                    else "never"))
        if run["error"]:
            lines.append(f"       {safe(run['error'])}")
    lines.append("edits  " + ", ".join(f"{k} {v}" for k, v in report["edits"].items()))
    waiting = report["hints"]
    if waiting["pending"] or report["webhooks"]:
        oldest = waiting["oldest_at"]
        lines.append(f"hints  {waiting['pending']} pending for {waiting['leads']} lead(s)"
                     + (f", oldest received {ago(oldest)} ago" if oldest else ""))
        lines.append("webhooks " + (", ".join(f"{k} {v}" for k, v in
                                               sorted(report["webhooks"].items())) or "none"))
    last = report["verify"]
    if last is not None:
        lines.append(f"verify {last['stale_share']:.2%} of tasks stale (95% interval "
                     f"{last['stale_low']:.2%} to {last['stale_high']:.2%}), "
                     f"{last['lead_share']:.2%} of leads; {last['sampled']} of "
                     f"{last['population']} leads sampled {ago(last['finished_at'])} ago")
    lines.append(f"failing leads: {report['failing_leads']}")
    for lead in report["failing_leads_top"]:
        lines.append(safe(f"  {lead['lead_id']} failed {lead['failures']} time(s) in a row: "
                          f"{lead['last_error']}"))
    for run in report["running"]:
        lines.append(f"running: run {run['id']} ({run['command']}) pid {run['pid']} on "
                     f"{run['host']} since {_when(run['started_at'])}")
    return lines


@cli.command()
@pass_settings
def doctor(settings: Settings) -> None:
    """Check the setup, one line per check: config, database, schema, leads query, keys.

    The credentials are checked through Authentication.svc/UserByAccessKey.Get,
    which also names the account's own API host. Exit status 0 only when every
    check passes, else 3.
    """
    from lsq_sync.cli import doctor as doctor_mod
    checks = doctor_mod.run_checks(settings.configured())
    for check in checks:
        click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:12s} {check.message}")
    if not all(c.ok for c in checks):
        sys.exit(EXIT_ABORTED)


# -- simulate and demo ---------------------------------------------------------------------

def _range(text: str, name: str) -> tuple[float, float]:
    try:
        low, _, high = text.partition("-")
        lo, hi = float(low), float(high or low)
    except ValueError:
        raise click.BadParameter(f"expected MIN-MAX in milliseconds, e.g. 200-400; got {text!r}",
                                 param_hint=name) from None
    if lo < 0 or hi < lo:
        raise click.BadParameter("expected 0 <= MIN <= MAX", param_hint=name)
    return lo, hi


def _limit(text: str) -> tuple[int, float]:
    if text.strip() in ("0", "none", "off"):
        return 0, 5.0
    try:
        calls, _, period = text.partition("/")
        result = int(calls), float(period or 5)
    except ValueError:
        raise click.BadParameter(f"expected CALLS/SECONDS such as 25/5, or 0 for none; "
                                 f"got {text!r}", param_hint="--rate-limit") from None
    if result[0] < 0 or result[1] <= 0:
        raise click.BadParameter("expected CALLS >= 0 and SECONDS > 0",
                                 param_hint="--rate-limit")
    return result


share = click.FloatRange(0, 1)


def _webhooks(url: str | None, header: str | None, loss: float, dup: float, delay: str,
              encoding: str) -> Any:
    """simulate's --webhook-* options as a WebhookConfig (None without --webhook-url)."""
    from lsq_sync.testing import WebhookConfig
    if url is None:
        if header is not None:
            raise click.BadParameter("--webhook-header goes with --webhook-url")
        return None
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"--webhook-url {url[:60]!r} is not an http(s) URL")
    pair = None
    if header is not None:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter("--webhook-header must be NAME:VALUE")
        pair = (name.strip(), value.strip())
    return WebhookConfig(url=url, header=pair, loss=loss, dup=dup,
                         delay_s=_range(delay, "--webhook-delay"), encoding=encoding)


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--leads", type=click.IntRange(min=0), default=300, show_default=True,
              help="How many leads the account has.")
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True,
              help="Seed for the generated leads and tasks.")
@click.option("--max-tasks", type=click.IntRange(min=0), default=6, show_default=True,
              help="Each lead has 0 to this many tasks.")
@click.option("--rate-limit", default="25/5", show_default=True, metavar="CALLS/SECONDS",
              help="The account's limit, enforced over a sliding window; 0 for none.")
@click.option("--throttle-status", type=click.Choice(["429", "200", "403"]), default="429",
              show_default=True, help="HTTP status of throttle answers (all three occur).")
@click.option("--latency", default="0-0", show_default=True, metavar="MIN-MAX",
              help="Added latency per request, in milliseconds.")
@click.option("--bare-500", type=share, default=0.0, help="Share of requests answered by a "
              "bare 500 (transient).")
@click.option("--malformed", type=share, default=0.0, help="Share answered by truncated JSON.")
@click.option("--html-502", type=share, default=0.0, help="Share answered by a proxy's HTML page.")
@click.option("--drop", type=share, default=0.0, help="Share whose connection drops mid-body.")
@click.option("--slow", type=share, default=0.0, help="Share answered after --slow-s seconds.")
@click.option("--slow-s", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Delay of slow answers.")
@click.option("--mx-error-every", type=click.IntRange(min=0), default=0, metavar="N",
              help="Every Nth lead always answers a 500 MX error (a logical error).")
@click.option("--bad-record-every", type=click.IntRange(min=0), default=0, metavar="N",
              help="Every Nth lead lists a task with a wrongly typed field.")
@click.option("--update-omitted", type=click.Choice(["keep", "clear"]), default="keep",
              show_default=True, help="What Task.svc/Update does with a field its body "
              "omits (undocumented for the real API).")
@click.option("--account-host", metavar="URL",
              help="The API host UserByAccessKey.Get names (default: this server).")
@click.option("--leads-db", metavar="URL",
              help="Also write the account's lead ids into a `leads` table of this database, "
                   "ready for the default [leads].query.")
@click.option("--churn", type=click.FloatRange(min=0), default=0.0, metavar="RATE",
              help="Tasks change by themselves: each lead at its own rate, spread over two "
                   "decades around RATE changes per lead per hour.")
@click.option("--webhook-url", metavar="URL",
              help="Post a LeadSquared-like webhook (events 7, 16, 17) here for every task "
                   "change, e.g. http://127.0.0.1:8780/lsq/webhook.")
@click.option("--webhook-header", metavar="NAME:VALUE",
              help="The webhook's custom header, e.g. x-lsq-sync-secret:s3cret.")
@click.option("--webhook-loss", type=share, default=0.0, help="Share of webhooks never posted.")
@click.option("--webhook-dup", type=share, default=0.0, help="Share of webhooks posted twice.")
@click.option("--webhook-delay", default="0-0", show_default=True, metavar="MIN-MAX",
              help="Delay before each webhook, in seconds.")
@click.option("--webhook-encoding", type=click.Choice(["json", "form", "text"]),
              default="json", show_default=True, help="The webhook's content type.")
def simulate(port: int, leads: int, seed: int, max_tasks: int, rate_limit: str,
             throttle_status: str, latency: str, bare_500: float, malformed: float,
             html_502: float, drop: float, slow: float, slow_s: float, mx_error_every: int,
             bad_record_every: int, update_omitted: str, account_host: str | None,
             leads_db: str | None, churn: float, webhook_url: str | None,
             webhook_header: str | None, webhook_loss: float, webhook_dup: float,
             webhook_delay: str, webhook_encoding: str) -> None:
    """Serve a local LeadSquared-compatible API for trying and testing.

    It answers RetrieveTaskByLeadId, Task.svc/Update and
    Authentication.svc/UserByAccessKey.Get like the real API, with
    deterministic generated data, the rate limit enforced, and faults on
    demand. GET /_sim/stats shows calls, throttles and the busiest window.
    It uses its own demo keys, printed at start. Stop it with Ctrl-C.

    \b
    With --churn the account changes by itself, and with --webhook-url it
    posts a webhook for every task change (lossy, repeated and delayed on
    demand), as LeadSquared does: what `lsq-sync listen` receives.
    """
    from lsq_sync.cli import demo
    from lsq_sync.store import db
    from lsq_sync.testing import Faults, SimConfig, Simulator

    calls, period = _limit(rate_limit)
    faults = Faults(latency_ms=_range(latency, "--latency"), bare_500=bare_500,
                    malformed=malformed, html_502=html_502, drop=drop, slow=slow, slow_s=slow_s,
                    mx_error_every=mx_error_every, bad_record_every=bad_record_every)
    if sum((bare_500, malformed, html_502, drop, slow)) > 1:
        raise click.BadParameter("the fault shares add up to more than 1")
    sim_cfg = SimConfig(leads=leads, seed=seed, max_tasks=max_tasks, rate_calls=calls,
                        rate_period_s=period, throttle_status=int(throttle_status),
                        account_host=account_host, update_omitted=update_omitted,
                        faults=faults, churn=churn,
                        webhooks=_webhooks(webhook_url, webhook_header, webhook_loss,
                                           webhook_dup, webhook_delay, webhook_encoding))
    try:
        sim = Simulator(sim_cfg, port=port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
                          f"choose another --port") from None
    if leads_db:
        written = demo.fill_leads_table(leads_db, sim.state.lead_ids())
        click.echo(f"wrote {written} lead ids into table `leads` of {db.safe_url(leads_db)}")
    click.echo(f"LeadSquared simulator on {sim.url}: {leads} leads, limit "
               f"{calls or 'none'}{f'/{period:g}s' if calls else ''}")
    click.echo(f"  [lsq] base_url = \"{sim.url}\"")
    click.echo(f"  access_key = \"{sim.cfg.access_key}\"   (public demo key)")
    click.echo(f"  secret_key = \"{sim.cfg.secret_key}\"   (public demo key)")
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), metavar="DIR",
              help="Folder for the demo's database and config (default: a new temp folder).")
@click.option("--leads", type=click.IntRange(min=1, max=5000), default=250, show_default=True,
              help="How many leads the simulated account has.")
@pass_settings
def demo(settings: Settings, directory: str | None, leads: int) -> None:
    """Run the whole job end to end on an embedded default: simulator + SQLite.

    Starts a simulated account on loopback, creates a SQLite database in its
    own folder, migrates it, pulls every lead's tasks with the progress bar,
    changes a few tasks in the CRM and pulls again, then prints a summary and a
    sample SQL report. Needs no setup and leaves the folder for you to explore.
    """
    from lsq_sync.cli import demo as demo_mod

    # A first impression: the runs' own sentences, not their log lines (--log-level info
    # shows those too).
    settings.log_level = settings.log_level or "warning"
    tty = settings.setup_logging(None)
    code = demo_mod.run(directory, leads=leads, tty=tty, echo=click.echo)
    sys.exit(code)


def main() -> None:
    cli(prog_name="lsq-sync")
