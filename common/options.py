"""Command-line flags generated from dataclasses, and ``--config FILE`` to re-run a logged config exactly.

A command declares what it takes once, as a dataclass whose fields carry their help text (:func:`arg`);
nested dataclass fields are option groups (run options, segmenter options, ...) shared by the commands
that take them. :func:`build_parser` derives one flag per leaf field:

* the name is ``--field-name`` (``flag=`` renames it, ``aliases=`` adds spellings); nested groups do not
  prefix their flags, so two groups of one command never declare the same flag (checked when building);
* the type comes from the annotation: ``int``, ``float``, ``str``, ``list[str|int|float]`` (comma-separated;
  ``nargs=`` for space-separated), ``Literal[...]`` (the choices), ``X | None``; ``type=`` overrides the
  parser (``common.cli.positive_int``...); a ``bool`` defaulting to ``False`` is a switch, one defaulting to
  ``True`` or ``None`` is ``--x/--no-x`` (``flag="--no-x"``: that switch alone);
* the help is ``help=`` with the default appended (``%(default)s`` in the text is replaced instead);
  a field without a default is required (from the command line or the ``--config`` file);
* the title of a group is its dataclass's first docstring line.

Parsing (:func:`parse_options`) starts from the dataclass defaults, applies the ``--config`` file (a JSON
object of the same nesting, e.g. the ``config.json`` a run logged) and then every flag given on the command
line, so the flags win over the file. A key of the file that is no field is a one-line
:class:`~common.errors.UserError` naming the key and the file (exit status 2), as is a value of the wrong
kind. Only the standard library is imported: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from common.errors import UserError, one_line

T = TypeVar("T")
META_KEY = "cli"
CONFIG_FLAG = "--config"
_CONFIG_DEST = "_config_file"


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one field appears on the command line (see the module docstring)."""

    help: str = ""
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    type: Callable[[str], Any] | None = None
    metavar: str | tuple[str, ...] | None = None
    nargs: str | int | None = None
    #: False: the field is set by the command (or the config file) only, never by a flag
    cli: bool = True
    #: a positional argument (top-level fields only), named by the field
    positional: bool = False
    #: with ``nargs="?"``: the value of the flag given without one
    const: Any = None


def arg(
    help: str = "",  # noqa: A002 - the argparse name
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    flag: str | None = None,
    aliases: Sequence[str] = (),
    type: Callable[[str], Any] | None = None,  # noqa: A002 - the argparse name
    metavar: str | tuple[str, ...] | None = None,
    nargs: str | int | None = None,
    cli: bool = True,
    positional: bool = False,
    const: Any = None,
) -> Any:
    """A dataclass field with its command-line presentation (``dataclasses.field`` plus a :class:`Flag`)."""
    meta = {META_KEY: Flag(help, flag, tuple(aliases), type, metavar, nargs, cli, positional, const)}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def nested(cls: type[T], help: str = "") -> Any:  # noqa: A002 - as in arg
    """A nested option group field (``cls()`` by default); ``help`` becomes the group's description."""
    return dataclasses.field(default_factory=cls, metadata={META_KEY: Flag(help)})


# --- types --------------------------------------------------------------------------------------------------


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None`` / ``Optional[X]``, else ``(tp, False)``."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(get_args(tp))
    return tp, False


def _csv(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            return [item(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}") from None

    parse.__name__ = f"list of {item.__name__}"
    return parse


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fmt_default(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def first_line(doc: str | None) -> str:
    """The first line of a docstring ('' when there is none)."""
    return (doc or "").strip().splitlines()[0].strip() if (doc or "").strip() else ""


# --- building the parser ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One flag: the field's path in the nested config (``("run", "seed")``) and its spellings."""

    path: tuple[str, ...]
    flags: tuple[str, ...]
    required: bool

    @property
    def dest(self) -> str:
        return ".".join(self.path)


def _is_group(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _help_text(spec: Flag, default: Any, required: bool, tp: Any) -> str:
    text = spec.help
    if "%(default)s" in text:
        text = text.replace("%(default)s", _fmt_default(default))
    elif default not in (None, MISSING, False, "", []) and "default" not in text.lower() and tp is not bool:
        text = f"{text} (default {_fmt_default(default)})" if text else f"default {_fmt_default(default)}"
    return text.replace("%", "%%")


def _add_leaf(
    target: argparse._ActionsContainer, f: dataclasses.Field[Any], tp: Any, path: tuple[str, ...], spec: Flag
) -> Leaf:
    default = _default_of(f)
    required = default is MISSING
    base, optional = _strip_optional(tp)
    name = spec.flag or "--" + f.name.replace("_", "-")
    kwargs: dict[str, Any] = {"dest": ".".join(path), "default": argparse.SUPPRESS, "required": required}
    help_text = _help_text(spec, default, required, base)
    if base is bool:
        if optional:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif default is True and spec.flag:  # e.g. --no-skip alone
            kwargs.update(action="store_const", const=False)
        elif default is True:  # --x (the default) and --no-x
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(action="store_const", const=True)
    else:
        if get_origin(base) is Literal:
            kwargs["choices"] = list(get_args(base))
            base = type(get_args(base)[0])
        if get_origin(base) is list:
            item = (get_args(base) or (str,))[0]
            item = _strip_optional(item)[0]
            if spec.nargs:
                kwargs.update(nargs=spec.nargs, type=spec.type or item)
            else:
                kwargs["type"] = spec.type or _csv(item)
        else:
            if spec.nargs:
                kwargs["nargs"] = spec.nargs
                if spec.const is not None:
                    kwargs["const"] = spec.const
            converter = spec.type or (base if base in (int, float) else None)
            if converter is not None:
                kwargs["type"] = converter
        if spec.metavar or "choices" not in kwargs:
            kwargs["metavar"] = spec.metavar or name.lstrip("-").upper().replace("-", "_")
    if spec.positional:
        if len(path) > 1:
            raise TypeError(f"{'.'.join(path)}: only top-level fields can be positional")
        kwargs.pop("dest")
        kwargs.pop("required")
        kwargs.setdefault("metavar", f.name)
        if kwargs.get("choices"):
            kwargs.pop("metavar")
        if not required:
            kwargs["nargs"] = "?"
        target.add_argument(f.name, help=help_text, **kwargs)
        return Leaf(path, (f.name,), required)
    flags = (name, *spec.aliases)
    target.add_argument(*flags, help=help_text, **kwargs)
    return Leaf(path, flags, required)


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    path: tuple[str, ...] = (),
    target: argparse._ActionsContainer | None = None,
) -> list[Leaf]:
    """Add a flag for every leaf field of dataclass ``cls`` (groups become argument groups); returns them."""
    leaves: list[Leaf] = []
    hints = _hints(cls)
    nested: list[tuple[dataclasses.Field[Any], Any]] = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(META_KEY, Flag())
        tp = hints[f.name]
        if _is_group(_strip_optional(tp)[0]):
            nested.append((f, _strip_optional(tp)[0]))
            continue
        if not spec.cli or not f.init:
            continue
        leaves.append(_add_leaf(target or parser, f, tp, (*path, f.name), spec))
    for f, sub in nested:
        spec = f.metadata.get(META_KEY, Flag())
        title = first_line(sub.__doc__) or f.name
        grp = parser.add_argument_group(title, spec.help or None)
        leaves += add_options(parser, sub, path=(*path, f.name), target=grp)
    return leaves


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an ``Examples:`` epilog keeps its lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.lstrip().lower().startswith("examples"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser(cls: type, *, prog: str, description: str = "", epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser of dataclass ``cls`` plus ``--config FILE``; ``parser.leaves`` lists the generated flags."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog, formatter_class=HelpFormatter)
    parser.add_argument(
        CONFIG_FLAG,
        dest=_CONFIG_DEST,
        default=None,
        metavar="FILE",
        help="re-run a logged config.json (an MLflow run's artifact): its values replace the defaults and the "
        "flags given with it replace its values",
    )
    leaves = add_options(parser, cls)
    seen: dict[str, str] = {}
    for leaf in leaves:
        for flag in leaf.flags:
            if flag in seen:
                raise TypeError(f"{cls.__name__}: {flag} is declared by both {seen[flag]} and {leaf.dest}")
            seen[flag] = leaf.dest
    parser.leaves = leaves  # type: ignore[attr-defined]
    return parser


# --- from values to the dataclass ---------------------------------------------------------------------------


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        node = data.get(key)
        if not isinstance(node, dict):
            node = data[key] = {}
        data = node
    data[path[-1]] = value


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """A JSON value checked against the field type (ints for floats are converted; None only when optional)."""
    base, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise UserError(f"{where}: null is not allowed (expected {getattr(base, '__name__', base)})")
    if get_origin(base) is Literal:
        if value not in get_args(base):
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(str, get_args(base)))}")
        return value
    if base is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if base is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is str and isinstance(value, str):
        return value
    if get_origin(base) is list and isinstance(value, list):
        item = (get_args(base) or (Any,))[0]
        return [_coerce(v, item, where) for v in value]
    if base in (int, float, str) or get_origin(base) is list:
        raise UserError(f"{where}: expected {getattr(base, '__name__', str(base))}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "config", path: tuple[str, ...] = ()) -> T:
    """Dataclass ``cls`` from nested ``data`` (missing keys keep their defaults). Unknown keys and values of
    the wrong kind are one-line :class:`UserError`s naming the key and ``source``."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{source}: {'.'.join((*path, str(key)))}"
        if key not in fields:
            raise UserError(f"{where}: unknown key (not an option of this command)")
        tp = hints[key]
        sub = _strip_optional(tp)[0]
        if _is_group(sub):
            if not isinstance(value, Mapping):
                raise UserError(f"{where}: expected an object of {sub.__name__} options, got {value!r}")
            kwargs[key] = from_dict(sub, value, source=source, path=(*path, key))
        else:
            kwargs[key] = _coerce(value, tp, where)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as the JSON-able nested dict that :func:`from_dict` reads back."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def fill(cls: type[T], *sources: Any, **values: Any) -> T:
    """Dataclass ``cls`` with each field taken from ``values``, else from the first of ``sources`` (option groups)
    with an attribute of that name, else its default: a command's options become a library config without
    copying field by field."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in values:
            kwargs[f.name] = values[f.name]
            continue
        for src in sources:
            if hasattr(src, f.name):
                kwargs[f.name] = getattr(src, f.name)
                break
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    return cls(**kwargs)


def read_config_file(path: str) -> dict[str, Any]:
    """The JSON object in ``path`` (a logged ``config.json``); a one-line error when it is not one."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{CONFIG_FLAG} {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{CONFIG_FLAG} {path}: not a JSON config ({one_line(exc)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{CONFIG_FLAG} {path}: expected a JSON object of options, got {type(data).__name__}")
    return data


def parse_options(cls: type[T], parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> T:
    """Defaults, then the ``--config`` file, then the flags given: the config dataclass ``cls``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == CONFIG_FLAG or a.startswith(CONFIG_FLAG + "=") for a in args):
        for action in parser._actions:  # the file may hold the required values: checked after merging
            action.required = False
            if not action.option_strings and action.nargs is None:
                action.nargs = "?"
    ns = vars(parser.parse_args(args))
    config_file = ns.pop(_CONFIG_DEST, None)
    data: dict[str, Any] = read_config_file(config_file) if config_file else {}
    source = config_file or "config"
    if config_file:
        from_dict(cls, data, source=source)  # unknown keys and bad values of the file, named by the file
    for dest, value in ns.items():
        _set_path(data, tuple(dest.split(".")), value)
    missing = [leaf.flags[0] for leaf in parser.leaves if leaf.required and not _has(data, leaf.path)]  # type: ignore[attr-defined]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    return from_dict(cls, data, source=source)


def _has(data: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return False
        data = data[key]
    return True
