"""Each knob is declared once: a field with type, bounds and description, from which its option,
``--help`` text, parsing and bounds check come (tweetpulse/options.py), for every command."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from tweetpulse.cli import build_parser
from tweetpulse.options import SETTING, _fields, _unwrap, apply_settings, option_names
from tweetpulse.settings import Settings, load_settings

# The section of the settings each command takes as options.
COMMAND_SECTIONS = {
    ("process",): "processor",
    ("dashboard",): "dashboard",
    ("retrain",): "retrain",
    ("produce", "twitter"): "twitter",
    ("produce", "search"): "twitter",
    ("train",): "registry",
    ("models",): "registry",
}


POSITIONALS = {("produce", "search"): ["a query"], ("models",): ["list"]}


def _sections() -> dict[str, type]:
    return {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if hasattr(field.annotation, "model_fields")
    }


def _subparser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _option_fields(model: type) -> dict[str, object]:
    """The fields that become options: not secrets, not dicts."""
    out = {}
    for name, info in _fields(model).items():
        kind = _unwrap(info.annotation)
        if kind is not SecretStr and typing.get_origin(kind) is not dict:
            out[name] = info
    return out


def test_every_setting_and_every_command_option_carries_a_description() -> None:
    from tweetpulse.training.presets import Preset, TrainConfig

    models = [*_sections().values(), TrainConfig]
    missing = [f"{m.__name__}.{n}" for m in models for n, info in _fields(m).items() if not info.description]
    missing += [
        f"Settings.{n}"
        for n, f in Settings.model_fields.items()
        if not f.description and n in ("log_level", "log_format")
    ]
    assert missing == []
    assert all(_fields(Preset)[name].description for name in ("r", "learning_rate", "batch_size", "epochs"))


@pytest.mark.parametrize("path", list(COMMAND_SECTIONS), ids=" ".join)
def test_every_setting_of_a_commands_section_is_one_of_its_options_with_the_fields_help(
    path: tuple[str, ...],
) -> None:
    section = COMMAND_SECTIONS[path]
    parser = _subparser(path)
    by_dest = {a.dest: a for a in parser._actions}
    for name, info in _option_fields(Settings.model_fields[section].annotation).items():
        action = by_dest[f"{SETTING}{section}.{name}"]
        assert option_names(name, info) == action.option_strings[: len(option_names(name, info))]
        assert info.description.replace("%", "%%") in action.help and f"{section}.{name}" in action.help


def test_an_option_given_as_its_defaults_text_leaves_every_setting_as_it_was() -> None:
    """Every option of every section parses the text of its own default back to the same value."""
    base = load_settings()
    for path, section in COMMAND_SECTIONS.items():
        argv = [*path, *POSITIONALS.get(path, [])]
        current = getattr(base, section)
        for name, info in _option_fields(type(current)).items():
            value = getattr(current, name)
            kind = _unwrap(info.annotation)
            if value is None:
                continue
            if kind is bool:
                argv.append(option_names(name, info)[0] if value else "--no-" + name.replace("_", "-"))
            elif isinstance(value, list):
                if value:
                    argv += [option_names(name, info)[0], *map(str, value)]
            else:
                argv += [option_names(name, info)[0], str(value)]
        args = build_parser().parse_args(argv)
        assert getattr(apply_settings(args, base), section) == current, path


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=-(10**6), max_value=10**7))
def test_an_out_of_bounds_option_is_a_usage_error_naming_option_and_setting(size: int) -> None:
    """Bounds come from the field: what the field refuses, the option refuses, naming both."""
    from pydantic import ValidationError

    from tweetpulse.settings import ProcessorSettings

    try:
        ProcessorSettings(batch_size=size)
        valid = True
    except ValidationError:
        valid = False
    parser = _subparser(("process",))
    if valid:
        assert (
            parser.parse_args(["--batch-size", str(size)]).__dict__[f"{SETTING}processor.batch_size"] == size
        )
        return
    with pytest.raises(SystemExit):
        parser.parse_args(["--batch-size", str(size)])


def test_the_names_users_knew_stay_as_aliases() -> None:
    args = build_parser().parse_args(
        ["process", "--batch-wait", "0.5", "--threads", "3", "--guarantee", "at_least_once"]
    )
    conf = apply_settings(args, load_settings()).processor
    assert (conf.batch_wait_s, conf.ort_threads, conf.processing_guarantee) == (0.5, 3, "at_least_once")
    args = build_parser().parse_args(
        ["dashboard", "--group", "g", "--allowed-host", "a.example", "--allowed-host", "b.example"]
    )
    conf = apply_settings(args, load_settings()).dashboard
    assert (conf.processor_group, conf.allowed_hosts) == ("g", ["a.example", "b.example"])
    args = build_parser().parse_args(
        ["train", "--data", "x.jsonl", "--registry", "/tmp/r", "--lora-r", "4", "--no-publish"]
    )
    assert (args.data, args.override_r, args.publish) == (["x.jsonl"], 4, False)
    assert apply_settings(args, load_settings()).registry.root == Path("/tmp/r")


def test_a_list_option_given_replaces_its_default_rather_than_adding_to_it() -> None:
    assert build_parser().parse_args(["train"]).data == ["builtin"]
    assert build_parser().parse_args(["train", "--data", "a.jsonl"]).data == ["a.jsonl"]
    assert build_parser().parse_args(["train", "--data", "a", "b", "--data", "c"]).data == ["a", "b", "c"]


def test_secrets_are_never_options() -> None:
    for path in COMMAND_SECTIONS:
        text = _subparser(path).format_help()
        assert "bearer-token" not in text and "password" not in text
