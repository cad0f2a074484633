"""`tweetpulse models list|show|promote|rollback`: the registry from the command line.

Needs no torch (processor hosts run it).
"""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import BaseModel, Field

from tweetpulse.options import add_command_options, add_settings_options
from tweetpulse.registry import MANIFEST, ArtifactError, ModelRegistry, announce_production
from tweetpulse.settings import Settings


class ModelsOptions(BaseModel):
    """`tweetpulse models`'s own options."""

    announce: bool = Field(
        True,
        description="promote/rollback: announce on the models topic (--no-announce: running processors keep "
        "their model)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "models",
        help="list, show, promote or roll back model versions in the registry",
        description="list: every version (* marks production) with its preset, base and int8 accuracy. "
        "show: a version's manifest (default production), after verifying every checksum. "
        "promote VERSION: verify it, make it production atomically and announce it on the models topic. "
        "rollback: make the previous production version production again and announce it.",
    )
    parser.add_argument("action", choices=["list", "show", "promote", "rollback"])
    parser.add_argument("version", nargs="?", help="version name, e.g. v0003 (show, promote)")
    add_command_options(parser, ModelsOptions)
    add_settings_options(parser, "registry")
    parser.set_defaults(handler=_models)


def _models(args: argparse.Namespace, settings: Settings) -> int:
    registry = ModelRegistry(settings.registry.root)
    try:
        if args.action == "list":
            print(_listing(registry))
        elif args.action == "show":
            print(json.dumps(_show(registry, args.version), indent=2, sort_keys=True))
        else:
            version = _change_production(registry, args.action, args.version)
            if args.announce:
                announce_production(settings, version, registry_root=registry.root)
            print(f"production: {version}")
    except (ArtifactError, OSError) as exc:  # OSError: e.g. a registry mounted read-only
        print(f"tweetpulse models: {exc}", file=sys.stderr)
        return 1
    return 0


def _change_production(registry: ModelRegistry, action: str, version: str | None) -> str:
    if action == "rollback":
        return registry.rollback()
    if not version:
        raise ArtifactError("promote needs a VERSION (see `tweetpulse models list`)")
    registry.promote(version)
    return version


def _listing(registry: ModelRegistry) -> str:
    versions = registry.versions()
    if not versions:
        return f"no model versions in {registry.root}"
    production = registry.production()
    rows = [f"  {'version':<8} {'created_at':<25} {'preset':<6} {'int8 acc':>8}  base_model"]
    for version in versions:
        manifest = _unverified_manifest(registry, version)
        if manifest is None:
            rows.append(f"  {version:<8} (unreadable manifest)")
            continue
        export = manifest.get("export")
        accuracy = export.get("onnx_int8_accuracy") if isinstance(export, dict) else None
        shown = f"{accuracy:.4f}" if isinstance(accuracy, int | float) and accuracy else "-"
        mark = "*" if version == production else " "
        rows.append(
            f"{mark} {version:<8} {str(manifest.get('created_at', '?'))[:25]:<25} "
            f"{manifest.get('preset', '-')!s:<6} {shown:>8}  {manifest.get('base_model', '?')}"
        )
    return "\n".join(rows)


def _unverified_manifest(registry: ModelRegistry, version: str) -> dict | None:
    """A version's manifest for listing (no checksums: `show` verifies); None if it cannot be read."""
    try:
        manifest = json.loads((registry.path(version) / MANIFEST).read_bytes())
    except (ArtifactError, OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _show(registry: ModelRegistry, version: str | None) -> dict:
    if version is None:
        version = registry.production()
    if version is None:
        raise ArtifactError(f"registry {registry.root} has no production model; name a version")
    artifact = registry.load(version)  # verifies every checksum
    return {**artifact.manifest, "path": str(artifact.path), "production": version == registry.production()}
