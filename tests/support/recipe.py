"""What an image recipe declares: the Containerfile's instructions and image/build.sh's ``buildah config``."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from regcast import __version__

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ImageConfig:
    user: str = ""
    workdir: str = ""
    env: dict[str, str] = field(default_factory=dict)
    ports: set[str] = field(default_factory=set)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    installer: str = ""  # the script that puts the files in place


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _pairs(text: str, args: dict[str, str]) -> dict[str, str]:
    text = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)
    return dict(item.split("=", 1) for item in shlex.split(text))


def _set(config: ImageConfig, what: str, value: str, args: dict[str, str]) -> None:
    """One declaration, named as in a Containerfile (buildah's flags are mapped onto these)."""
    if what == "USER":
        config.user = value
    elif what == "WORKDIR":
        config.workdir = value
    elif what in ("ENV", "LABEL"):
        (config.env if what == "ENV" else config.labels).update(_pairs(value, args))
    elif what == "EXPOSE":
        config.ports.update(value.split())
    elif what == "ENTRYPOINT":
        config.entrypoint = json.loads(value)
    elif what == "CMD":
        config.cmd = json.loads(value) if value.startswith("[") else shlex.split(value)


def containerfile(path: Path = ROOT / "Containerfile") -> ImageConfig:
    config, args = ImageConfig(), dict[str, str]()
    for word, rest in _instructions(path.read_text()):
        if word == "ARG" and "=" in rest:
            args.update(_pairs(rest, args))
        elif word == "RUN" and "install.sh" in rest:
            config.installer = "image/install.sh"
        else:
            _set(config, word, rest, args)
    return config


_FLAGS = {
    "--user": "USER",
    "--workingdir": "WORKDIR",
    "--env": "ENV",
    "--port": "EXPOSE",
    "--entrypoint": "ENTRYPOINT",
    "--cmd": "CMD",
    "--label": "LABEL",
}


def buildah_script(path: Path = ROOT / "image" / "build.sh", version: str = __version__) -> ImageConfig:
    """The ``buildah config`` call of image/build.sh (values computed at build time left as written)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    match = re.search(r'"\$\{B\[@\]\}" config (.*?) "\$ctr"', text)
    assert match, "image/build.sh has no buildah config call"
    words = shlex.split(match.group(1).replace('"$VERSION"', version).replace("$VERSION", version))
    config = ImageConfig()
    for flag, value in zip(words[::2], words[1::2], strict=True):
        quoted = shlex.quote(value) if flag in ("--env", "--label") else value
        _set(config, _FLAGS[flag], quoted, {})
    if "install.sh" in text and "chroot" in text:
        config.installer = "image/install.sh"
    return config
