"""Every command and subcommand of ``kd`` has ``--help`` that works and shows an example."""

from __future__ import annotations

import click
import pytest

from commands.cli import cli


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            out += _walk(command, path + (name,))
        else:
            out.append(path + (name,))
    return out


COMMANDS = [p for p in _walk(cli) if p]  # every command and subcommand; `kd` itself is below

def test_walk_finds_the_commands():
    names = {" ".join(p) for p in COMMANDS}
    assert {"ingest", "samples", "classes", "db", "db upgrade", "db current", "runs", "report", "export", "labels clean"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_zero_and_shows_an_example(runner, path, flag):
    result = runner.invoke(cli, [*path, flag])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "Example" in result.output


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_lists_every_command(runner, flag):
    result = runner.invoke(cli, [flag])
    assert result.exit_code == 0, result.output
    for name in cli.list_commands(click.Context(cli)):
        assert f"  {name} " in result.output or result.output.rstrip().endswith(f"  {name}")
    assert "Example" in result.output and "kd ingest" in result.output  # the pipeline example


def test_version(runner):
    from kdstore import __version__

    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
