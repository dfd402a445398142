"""Map a container to the host command that plays it: its own `command`, or the image table (pure).

The local cluster runs host processes, not images. An image is matched by its
name without registry, tag or digest (`docker.io/imeshai/echoserver:1.0` →
`imeshai/echoserver`, `library/nginx` → `nginx`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zeromesh.samples import SAMPLES

DEFAULT_TABLE = Path(__file__).with_name("images.yaml")


@dataclass(frozen=True, slots=True)
class ImageMissing:
    reason: str
    message: str


def image_key(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if len(parts) > 1 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts).lower()


def parse_table(text: str, source: str) -> dict[str, dict[str, Any]]:
    """Validate an image table file; errors name the file and the entry."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of image name to entry")
    entries = data.get("images", data) if "images" in data else data
    if not isinstance(entries, dict):
        raise ValueError(f"{source}: images: expected a mapping of image name to entry")
    table: dict[str, dict[str, Any]] = {}
    for image, entry in entries.items():
        where = f"{source}: images.{image}"
        if isinstance(entry, str):
            entry = {"sample": entry}
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a sample name or a mapping with sample/command")
        unknown = set(entry) - {"sample", "command", "args", "env"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        if ("sample" in entry) == ("command" in entry):
            raise ValueError(f"{where}: give exactly one of `sample` or `command`")
        if "sample" in entry and entry["sample"] not in SAMPLES:
            raise ValueError(f"{where}.sample: unknown sample {entry['sample']!r}; "
                             f"shipped samples: {', '.join(sorted(SAMPLES))}")
        for fld in ("command", "args"):
            if fld in entry and not (isinstance(entry[fld], list)
                                     and all(isinstance(x, str) for x in entry[fld])):
                raise ValueError(f"{where}.{fld}: expected a list of strings")
        if "env" in entry and not (isinstance(entry["env"], dict)
                                   and all(isinstance(v, str) for v in entry["env"].values())):
            raise ValueError(f"{where}.env: expected a mapping of strings")
        table[image_key(str(image))] = entry
    return table


def default_table() -> dict[str, dict[str, Any]]:
    return parse_table(DEFAULT_TABLE.read_text(), str(DEFAULT_TABLE))


def resolve_command(container: Mapping[str, Any], table: Mapping[str, Mapping[str, Any]],
                    samples_dir: Path, python: str) -> tuple[list[str], dict[str, str]] | ImageMissing:
    """argv and extra env for a container, as Kubernetes combines command/args with the image's."""
    command: Sequence[str] | None = container.get("command")
    args: Sequence[str] = container.get("args") or []
    if command:
        return [*command, *args], {}
    image = str(container.get("image", ""))
    entry = table.get(image_key(image))
    if entry is None:
        return ImageMissing(
            "ImageNotInTable",
            f'image "{image}" has no command and no entry in the image table: give the '
            "container a `command`, or map the image (without registry and tag) with "
            "`zeromesh up --image-table FILE`",
        )
    if "sample" in entry:
        base = [python, str(samples_dir / SAMPLES[entry["sample"]])]
    else:
        base = list(entry["command"])
    entry_args = list(entry.get("args") or [])
    return [*base, *(args or entry_args)], dict(entry.get("env") or {})


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args; unknown references stay as written."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), value.replace("$$", "\0")).replace("\0", "$")
