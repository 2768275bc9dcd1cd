"""``kd db``: the store's schema revision."""

from __future__ import annotations

import click
from sqlalchemy.exc import DBAPIError

from kdstore import migrate
from kdstore.errors import InterruptedAfterRecord, KdError, Terminated
from kdstore.runs import SignalGuard

from .common import counted, json_option, open_store, print_json, store_options


@click.group()
def db():
    """Schema migrations of the store.

    \b
    Example:
      kd db current
      kd db upgrade
    """


@db.command()
@store_options
@json_option
def upgrade(db, as_json):
    """Bring the store's schema up to this kd's revision (creates a new store).

    \b
    Example:
      kd db upgrade --db old.db
    """
    store = open_store(db, create=True, check=False)  # (a database error after it names the store)
    current, state = migrate.current_revision(store.engine), migrate.state(store.engine)
    if state == "foreign":
        raise KdError(f"{store.url} is not a kd store (it has tables but no kd schema revision): not touching it")
    if state == "newer":
        raise KdError(f"{store.url} is at schema revision {current}, newer than this kd knows ({migrate.head_revision()}): upgrade kd")
    if state != "current" and store.read_only:  # (SQLite said "attempt to write a readonly database", naming no cause)
        raise KdError(f"cannot upgrade {store.url} from revision {current or 'empty'} to {migrate.head_revision()}: "
                      f"{store.read_only}; nothing was changed")
    denied = migrate.cannot_migrate(store.engine) if state != "current" else None
    if denied:  # (PostgreSQL said only "permission denied for schema public")
        raise KdError(f"cannot upgrade {store.url} from revision {current or 'empty'} to {migrate.head_revision()}: "
                      f"{denied}; nothing was changed")
    # the revision found under the migration lock: another process may have upgraded the store meanwhile
    guard = SignalGuard()  # (a kill raises as Ctrl-C does: one line saying where the store stands)
    try:
        before = migrate.upgrade(store.engine)
    except (KeyboardInterrupt, Terminated) as exc:  # the one transaction rolled back: click said only "Aborted!"
        left = _revision_left(store)
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        said = (f"{why}: the store {store.url} is still at revision {current or 'empty'}, nothing was changed" if left == current
                else f"{why}: the store {store.url} is at revision {left}")
        said += f"; `{migrate.upgrade_command(store.engine.url)}` upgrades it"
        raise (InterruptedAfterRecord(said) if isinstance(exc, KeyboardInterrupt) else Terminated(said)) from None
    except DBAPIError as exc:  # a step that failed (a full disk, a lock): the one transaction rolled back
        first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        left = _revision_left(store)
        kept = (f"the store is still at revision {current or 'empty'}: nothing was changed" if left == current
                else f"the store is at revision {left}")
        raise KdError(f"upgrading {store.url} from {current or 'empty'} to {migrate.head_revision()} failed: {first}; {kept}") from None
    finally:
        guard.close()
    after = migrate.current_revision(store.engine)
    # a store made before 0009 keyed a text with a zero-width space apart from the same text without one
    twins = migrate.unkeyed_duplicates(store.engine) if before is not None and before < "0009" else []
    if as_json:
        print_json({"db": store.url, "before": before, "after": after, "duplicates": twins})
    else:
        click.echo(f"{store.url}: already at revision {after}, nothing to do" if before == after
                   else f"{store.url}: {before or 'empty'} -> {after}")
    if twins:  # (standard error, with --json too)
        shown = ", ".join(f"{t['sample']} ({t['split']}) of {t['of']} ({t['of_split']})" for t in twins[:20])
        crossed = sum(t["split"] != t["of_split"] for t in twins)
        click.echo(f"warning: {counted(len(twins), 'stored sample')} {'is' if len(twins) == 1 else 'are'} now a duplicate of another (the texts differ only in "
                   f"characters no model reads, such as a zero-width space), each kept as it was: {shown}"
                   f"{f' and {len(twins) - 20} more' if len(twins) > 20 else ''}"
                   + (f"; {crossed} across splits (a test text also in train counts a text trained on)" if crossed else ""), err=True)


@db.command()
@store_options
@click.option("--check/--no-check", is_flag=True,
              help="Exit with status 1 unless the store is at this kd's revision (for scripts and deploy checks).")
@json_option
def current(db, check, as_json):
    """Show the store's schema revision and the one this kd needs.

    \b
    Example:
      kd db current --json
      kd db current --check || kd db upgrade
    """
    store = open_store(db, create=False, check=False)
    if migrate.is_empty(store.engine):
        raise KdError(f"no kd store at {store.url} (the database is empty): run `kd ingest FILE --db {migrate.db_option(store.engine.url)}` "
                      f"or `{migrate.upgrade_command(store.engine.url)}`")  # (a bare `kd ingest` makes ./kd.db or $KD_DB)
    cur, head, state = migrate.current_revision(store.engine), migrate.head_revision(), migrate.state(store.engine)
    if as_json:
        print_json({"db": store.url, "current": cur, "head": head, "up_to_date": state == "current", "state": state})
    else:
        upgrade = f"run `{migrate.upgrade_command(store.engine.url)}`"
        if store.read_only:  # (that command refuses a store kd cannot write)
            upgrade = f"{store.read_only}: make it writable, then {upgrade}"
        elif state == "behind" and (denied := migrate.cannot_migrate(store.engine)):
            upgrade = f"{upgrade}; {denied}"
        advice = {"current": "up to date", "behind": upgrade, "newer": "newer than this kd: upgrade kd",
                  "foreign": "not a kd store"}[state]
        click.echo(f"{store.url}: revision {cur or 'none'} (head {head}, {advice})")
    if check and state != "current":  # (standard error says why: with --json, or stdout sent away, it said nothing)
        migrate.ensure_current(store.engine, create=False, read_only=store.read_only)
        raise SystemExit(1)


def _revision_left(store) -> str | None:
    """The store's revision after an upgrade stopped ("?": the connection itself gone, what the store holds
    now is not known from here)."""
    try:
        return migrate.current_revision(store.engine)
    except DBAPIError:
        return "?"
