"""Command-line options made from pydantic fields: each knob is declared once, as a field with its
type, bounds and description, and its option, ``--help`` text, parsing and bounds check come from it.

Two kinds of models feed a command's parser:

- a section of :class:`~tweetpulse.settings.Settings` (``processor``, ``dashboard``, ``retrain``...):
  every field becomes an option (``batch_wait_s`` -> ``--batch-wait-s``, plus the names users know,
  listed in the field's ``json_schema_extra={"cli": [...]}``; ``{"cli": False}``: no option) that overrides the same setting's
  environment variable (``TWEETPULSE_PROCESSOR__BATCH_WAIT_S``) and TOML key; :func:`apply_settings`
  validates them together with the section (its cross-field rules included);
- a command's own options (a ``BaseModel`` of what is not a setting: ``--every``, ``--limit``): each
  becomes an option whose value lands on ``args.<field>``, its default the field's.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import SecretStr, TypeAdapter
from pydantic.fields import FieldInfo

from tweetpulse.settings import Settings, SettingsError

SETTING = "setting:"  # argparse dest prefix of a settings option: setting:<section>.<field>
METAVARS = {int: "N", float: "X", str: "TEXT", Path: "PATH"}


def add_settings_options(parser: argparse.ArgumentParser, section: str) -> None:
    """Every field of ``Settings.<section>`` as an option of `parser`, in its own help group."""
    model = Settings.model_fields[section].annotation
    group = parser.add_argument_group(
        f"{section} settings",
        f"each option overrides TWEETPULSE_{section.upper()}__<NAME> and [{section}] in the config file",
    )
    for name, info in model.model_fields.items():
        where = f"{section}.{name}, env TWEETPULSE_{section.upper()}__{name.upper()}"
        shown = info.get_default(call_default_factory=True)
        _add(
            group, name, info, dest=f"{SETTING}{section}.{name}", default=None, help=_help(info, shown, where)
        )


def add_command_options(
    parser: Any,
    model: type,
    only: tuple[str, ...] | None = None,
    *,
    dest_prefix: str = "",
    overriding: str | None = None,
) -> None:
    """Every field of a command's own options (a pydantic model or dataclass; `only`: these fields) as an
    option; its value lands on args.<dest_prefix><field>, by default the field's default, or (`overriding`
    names what it overrides, e.g. "the preset's") None when not given."""
    for name, info in _fields(model).items():
        if only is None or name in only:
            value = None if overriding else info.get_default(call_default_factory=True)
            text = _help(info, overriding or value, "")
            _add(parser, name, info, dest=dest_prefix + name, default=value, help=text)


def command_values(args: argparse.Namespace, model: type) -> dict[str, Any]:
    """The values of `model`'s options in `args` (those add_command_options added)."""
    return {name: getattr(args, name) for name in _fields(model) if hasattr(args, name)}


def _fields(model: type) -> dict[str, FieldInfo]:
    fields = getattr(model, "model_fields", None) or getattr(model, "__pydantic_fields__", None)
    if fields is None:
        raise TypeError(f"{model.__name__} is neither a pydantic model nor a pydantic dataclass")
    return fields


def apply_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """`settings` with the settings options given on the command line, each section validated as a
    whole; a bad combination is a SettingsError in one line naming the option and the setting."""
    given: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if dest.startswith(SETTING) and value is not None:
            section, name = dest[len(SETTING) :].split(".", 1)
            given.setdefault(section, {})[name] = value
    updates = {}
    for section, changes in given.items():
        current = getattr(settings, section)
        try:
            updates[section] = type(current).model_validate({**current.model_dump(), **changes})
        except pydantic.ValidationError as exc:
            raise SettingsError(f"invalid settings: {_describe(exc, section, changes)}") from None
    return settings.model_copy(update=updates) if updates else settings


def option_names(name: str, info: FieldInfo) -> list[str]:
    """The field's option and the names users know it by."""
    return [f"--{name.replace('_', '-')}", *_extra(info).get("cli", [])]


def _extra(info: FieldInfo) -> dict[str, Any]:
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def _add(
    parser: Any, name: str, info: FieldInfo, *, dest: str, default: Any, help: str
) -> argparse.Action | None:
    label = f"{dest[len(SETTING) :]}: " if dest.startswith(SETTING) else ""  # names the setting
    kind = _unwrap(info.annotation)
    if kind is SecretStr or typing.get_origin(kind) is dict or _extra(info).get("cli") is False:
        return None  # secrets never on a command line (ps shows it); dicts: the config file or env
    help_text = help
    names = option_names(name, info)
    if kind is bool:
        if default is False:  # a command's plain flag
            return parser.add_argument(*names, dest=dest, action="store_true", help=help_text)
        return parser.add_argument(
            *names, dest=dest, default=default, action=argparse.BooleanOptionalAction, help=help_text
        )
    if typing.get_origin(kind) is Literal:
        choices = list(typing.get_args(kind))
        return parser.add_argument(*names, dest=dest, default=default, choices=choices, help=help_text)
    if typing.get_origin(kind) in (list, tuple, frozenset):
        (item,) = typing.get_args(kind)[:1]
        if typing.get_origin(item) is Literal:
            kinds: dict[str, Any] = {"choices": list(typing.get_args(item))}
        else:
            kinds = {"type": _parser(item, [], label), "metavar": METAVARS.get(item, "VALUE")}
        return parser.add_argument(
            *names, dest=dest, default=default, nargs="+", action=_Extend, help=help_text, **kinds
        )
    return parser.add_argument(
        *names,
        dest=dest,
        default=default,
        type=_parser(kind, info.metadata, label),
        metavar=METAVARS.get(kind, "VALUE"),
        help=help_text,
    )


class _Extend(argparse.Action):
    """A list option, repeatable (``--data a b --data c``); given at all, it replaces the default."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option: Any = None) -> None:
        current = getattr(namespace, self.dest, None)
        items = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, items + list(values))


def _unwrap(annotation: Any) -> Any:
    """The annotation without None (an optional option is simply not given)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _parser(kind: Any, metadata: list[Any], label: str = "") -> Any:
    """An argparse type: the text validated as the field validates it (type and bounds)."""
    adapter = TypeAdapter(Annotated[kind, *metadata] if metadata else kind)

    def parse(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except pydantic.ValidationError as exc:
            message = exc.errors()[0]["msg"]
            raise argparse.ArgumentTypeError(
                f"{label}{message[:1].lower()}{message[1:]}, got {text!r}"
            ) from None

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _help(info: FieldInfo, default: Any, where: str) -> str:
    """The description, then the default (unless the description says what none means) and where."""
    description = info.description or ""
    parts = [where] if where else []
    if default is not None and default is not False:
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else default
        parts.insert(0, f"default {shown}")
    elif default is None and "none:" not in description:
        parts.insert(0, "default none")
    text = f"{description} ({'; '.join(parts)})" if parts else description
    return text.replace("%", "%%")  # argparse formats help with %


def _describe(exc: pydantic.ValidationError, section: str, changes: dict[str, Any]) -> str:
    fields = Settings.model_fields[section].annotation.model_fields
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        name = f"{section}.{'.'.join(str(p) for p in err['loc'])}" if err["loc"] else section
        if field in changes:
            name = f"{option_names(field, fields[field])[0]} ({name})"
        parts.append(f"{name}: {err['msg']}")
    return "; ".join(parts)
