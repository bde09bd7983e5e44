"""Flags generated from config dataclasses (``common.options``) and the command runner (``pipelines._command``):
the flags match the dataclass, ``--config`` re-runs a logged ``config.json`` exactly, flags override it, and a
bad config file is one line and exit status 2."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import typing
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest

from common.cli import RunOptions, positive_int, run_main
from common.errors import UserError
from common.options import _strip_optional, arg, build_parser, from_dict, nested, parse_options, to_dict
from pipelines._command import Command, Context

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Tiles:
    """tiling"""

    tile: int = arg("tile side, px", default=128, type=positive_int)
    overlap: int = arg("overlap, px (default %(default)s)", default=64)


@dataclasses.dataclass
class Toy:
    """A command's options."""

    data: str = arg("input table")
    mode: Literal["fast", "exact"] = arg("how", default="fast")
    ratio: float = arg("a share", default=0.5)
    names: list[str] | None = arg("comma-separated names", default=None)
    skip: bool = arg("skip flat tiles", default=True, flag="--no-skip")
    vote: bool | None = arg("vote (default: as stored)", default=None)
    fast: bool = arg("a switch", default=False)
    tiles: Tiles = nested(Tiles)
    run: RunOptions = nested(RunOptions)


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


def test_flags_follow_the_dataclass() -> None:
    parser = build_parser(Toy, prog="toy")
    actions = _actions(parser)
    assert actions["mode"].choices == ["fast", "exact"]
    assert actions["tiles.tile"].option_strings == ["--tile"] and actions["tiles.tile"].type is positive_int
    assert actions["skip"].option_strings == ["--no-skip"]
    assert "--no-vote" in actions["vote"].option_strings
    assert all(a.help for a in parser._actions)
    text = parser.format_help()
    assert "(default 128)" in text and "overlap, px (default 64)" in text and "tiling:" in text
    assert "--data DATA" in text.split("\n\n")[0] and "[--data" not in text  # required: no brackets in the usage
    cfg = parse_options(Toy, parser, ["--data", "t.csv"])
    assert cfg == Toy(data="t.csv")
    cfg = parse_options(
        Toy, parser, ["--data", "t.csv", "--mode", "exact", "--names", "a,b", "--no-skip", "--no-vote", "--tile", "64"]
    )
    assert (cfg.mode, cfg.names, cfg.skip, cfg.vote, cfg.tiles.tile) == ("exact", ["a", "b"], False, False, 64)
    with pytest.raises(SystemExit) as exc:
        parse_options(Toy, parser, [])  # --data is required
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        parse_options(Toy, parser, ["--data", "x", "--tile", "0"])


def test_config_file_round_trip_and_overrides(tmp_path: Path) -> None:
    parser = build_parser(Toy, prog="toy")
    cfg = parse_options(
        Toy, parser, ["--data", "t.csv", "--mode", "exact", "--ratio", "1", "--names", "a", "--seed", "7"]
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(to_dict(cfg)))
    assert parse_options(Toy, parser, ["--config", str(path)]) == cfg
    again = parse_options(Toy, parser, ["--config", str(path), "--seed", "8", "--tile", "32"])
    assert again == dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, seed=8), tiles=Tiles(tile=32))
    assert isinstance(from_dict(Toy, {"data": "x", "ratio": 1}).ratio, float)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"data": "x", "colour": "red"}, r"config\.json: colour: unknown key"),
        ({"data": "x", "tiles": {"tilesize": 3}}, r"config\.json: tiles\.tilesize: unknown key"),
        ({"data": "x", "mode": "slow"}, r"mode: 'slow' is not one of fast, exact"),
        ({"data": 3}, r"data: expected str"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_config_file_is_one_line(tmp_path: Path, content: object, match: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match=match):
        parse_options(Toy, build_parser(Toy, prog="toy"), ["--config", str(path)])


def _toy_command(seen: list[Toy]) -> Command[Toy]:
    def run(cfg: Toy, ctx: Context) -> dict[str, object]:
        seen.append(cfg)
        ctx.say(f"ran on {cfg.data}")
        return {"data": cfg.data, "files": [cfg.data]}

    return Command("toy", Toy, run, doc="Toy.\n\nExample::\n\n    python -m pipelines.toy --data x\n", experiment="toy")


def test_logged_config_reruns_exactly(tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    import mlflow

    seen: list[Toy] = []
    cmd = _toy_command(seen)
    assert "python -m pipelines.toy --data x" in cmd.parser().format_help()  # examples kept as written
    argv = ["--data", "a.csv", "--mode", "exact", "--no-skip", "--tracking-uri", tracking_uri, "--seed", "3"]
    assert run_main(cmd.main, argv) == 0
    assert capsys.readouterr().out.splitlines()[0] == "ran on a.csv"
    run = mlflow.search_runs(experiment_names=["toy"], output_format="list")[0]
    logged = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="config.json", dst_path=tmp_path)
    assert run.data.params["mode"] == "exact" and run.data.params["run.seed"] == "3"
    assert run_main(cmd.main, ["--config", logged]) == 0
    assert seen[1] == seen[0]
    assert run_main(cmd.main, ["--config", logged, "--mode", "fast", "--json"]) == 0
    assert seen[2] == dataclasses.replace(seen[0], mode="fast", run=dataclasses.replace(seen[0].run, json=True))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["data"] == "a.csv"
    # an unknown key: one line naming the key and the file, exit status 2, nothing run
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(Path(logged).read_text()), "tile_size": 3}))
    assert run_main(cmd.main, ["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "tile_size" in err and str(bad) in err
    assert len(seen) == 3


COMMANDS = sorted(
    p.stem
    for p in (ROOT / "pipelines").glob("*.py")
    if not p.stem.startswith("_") and "COMMAND = Command(" in p.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_generated_command_matches_its_dataclass(name: str) -> None:
    """Every flag of a converted command: it has help, its choices are the Literal's, its value without the flag
    is the dataclass default; and the options survive the config.json round trip."""
    cmd = importlib.import_module(f"pipelines.{name}").COMMAND
    parser = cmd.parser()
    actions = _actions(parser)
    argv: list[str] = []
    for leaf in parser.leaves:
        if leaf.required:  # a valid value: the first choice, else "1" (as many as nargs asks)
            action = actions[leaf.dest]
            values = [str(action.choices[0]) if action.choices else "1"] * (
                action.nargs if isinstance(action.nargs, int) else 1
            )
            argv += [*action.option_strings[:1], *values]
    cfg = parse_options(cmd.options, parser, argv)
    for leaf in parser.leaves:
        action = actions[leaf.dest]
        assert action.help, f"{name}: {leaf.flags[0]} has no help"
        owner = _owner_of(cmd.options, leaf.path)
        tp, optional = _strip_optional(typing.get_type_hints(owner)[leaf.path[-1]])
        if get_origin(tp) is Literal:
            assert action.choices == list(get_args(tp)), f"{name}: {leaf.flags[0]}"
        if not leaf.required:
            field = {f.name: f for f in dataclasses.fields(owner)}[leaf.path[-1]]
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            value = cfg
            for key in leaf.path:
                value = getattr(value, key)
            assert value == default, f"{name}: {leaf.flags[0]}"
    assert from_dict(cmd.options, json.loads(json.dumps(to_dict(cfg)))) == cfg


def _owner_of(cls: type, path: tuple[str, ...]) -> type:
    for key in path[:-1]:
        cls = _strip_optional(typing.get_type_hints(cls)[key])[0]
    return cls
