"""Layered YAML configuration: conf/base.yaml (every default) + overlays + ``--set`` overrides.

The merged configuration is validated before Spark starts. Every problem is reported as a
:class:`ConfigError` whose one-line message names the key and the file (or ``--set``) it came from.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from shopsense.core.settings import Settings

REQUIRED = "???"
SET_ORIGIN = "--set"
# Maps whose keys the user names (each value is a scalar).
OPEN_MAPS = ("spark.conf",)


class ConfigError(ValueError):
    """An invalid configuration: the message names the key and where it was set."""


def base_conf_path() -> Path:
    """Path of the packaged conf/base.yaml (the repository's conf/ folder, installed as
    the ``shopsense.conf`` package)."""
    return Path(str(resources.files("shopsense.conf").joinpath("base.yaml")))


def conf_dir() -> Path:
    """The folder holding base.yaml and the shipped overlays (local.yaml, cluster.yaml)."""
    return base_conf_path().parent


def _read_yaml(path: str | Path) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return _dates_as_strings(data)


def _dates_as_strings(node: Any) -> Any:
    """YAML reads ``2024-03-31`` as a date; conf keeps dates as ISO strings."""
    if isinstance(node, dict):
        return {k: _dates_as_strings(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_dates_as_strings(v) for v in node]
    if isinstance(node, (dt.date, dt.datetime)):
        return node.isoformat()
    return node


def _merge(into: dict, overlay: Mapping, origin: str, origins: dict, prefix: str = "") -> None:
    """Deep-merge overlay into `into`, recording which file set each leaf."""
    for key, value in overlay.items():
        key = str(key)
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value, origin, origins, dotted + ".")
            if not value:
                origins.setdefault(dotted, origin)
        else:
            into[key] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value
            origins[dotted] = origin
            if isinstance(value, Mapping):
                _record_leaves(value, origin, origins, dotted + ".")


def _record_leaves(tree: Mapping, origin: str, origins: dict, prefix: str) -> None:
    for key, value in tree.items():
        origins[f"{prefix}{key}"] = origin
        if isinstance(value, Mapping):
            _record_leaves(value, origin, origins, f"{prefix}{key}.")


def parse_set(item: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is read as YAML (``3`` is an int, ``true`` a
    bool, ``[a, b]`` a list)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError):  # ValueError: a date-like value such as 2024-13-45
        value = raw
    if isinstance(value, (dt.date, dt.datetime)):  # dates in conf are strings (as_of=2024-03-31)
        value = raw.strip()
    return key, value


def _nest(dotted: str, value: Any) -> dict:
    """``a.b.c`` → ``{a: {b: {c: value}}}``; below an open map (``spark.conf``) the rest of the
    key stays whole, so ``spark.conf.spark.sql.ansi.enabled=false`` sets one Spark setting."""
    parts = dotted.split(".")
    for open_map in OPEN_MAPS:
        prefix = open_map.split(".")
        if parts[:len(prefix)] == prefix and len(parts) > len(prefix):
            parts = prefix + [".".join(parts[len(prefix):])]
    tree: Any = value
    for part in reversed(parts):
        tree = {part: tree}
    return tree


class Conf(dict):
    """The validated configuration: the merged mapping as written (``conf["warehouse"]``), where
    each value came from, and the typed sections (``conf.forecast.horizon``, see
    :mod:`shopsense.core.settings`) that jobs read."""

    origins: dict[str, str]
    settings: Settings

    def __getattr__(self, name: str) -> Any:
        if name in Settings.model_fields and "settings" in self.__dict__:
            return getattr(self.__dict__["settings"], name)
        raise AttributeError(name)

    def get_path(self, dotted: str, default: Any = None) -> Any:
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def origin(self, dotted: str) -> str:
        return self.origins.get(dotted, str(base_conf_path()))

    @property
    def is_local(self) -> bool:
        return (self.settings.spark.master or "").startswith("local")


def load_conf(files: Iterable[str | Path] = (), overrides: Iterable[str] = (),
              base: str | Path | None = None) -> Conf:
    """Load base.yaml, layer ``files`` in order, then ``overrides`` (``key=value`` strings), and
    validate. Raises :class:`ConfigError` naming the key and file of the first problem."""
    base_path = Path(base) if base else base_conf_path()
    base_tree = _read_yaml(base_path)
    merged: dict = copy.deepcopy(base_tree)
    origins: dict[str, str] = {}
    _record_leaves(base_tree, str(base_path), origins, "")
    for path in files:
        _merge(merged, _read_yaml(path), str(path), origins)
    for item in overrides:
        key, value = parse_set(item)
        _merge(merged, _nest(key, value), SET_ORIGIN, origins)
    conf = Conf(merged)
    conf.origins = origins
    _validate(conf)
    return conf


_TYPE_NAMES = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
               "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
               "model_type": "a mapping", "model_attributes_type": "a mapping"}


def _first_origin(conf: Conf, dotted: str) -> str:
    """Where ``dotted`` was set; for a whole section, the last overlay that set a key in it."""
    inside = [o for k, o in conf.origins.items() if k.startswith(dotted + ".") or not dotted]
    if dotted in conf.origins and not inside:
        return conf.origins[dotted]
    overlays = [o for o in inside if o != str(base_conf_path())]
    if overlays or inside or "." not in dotted:
        return (overlays or inside or [conf.origin(dotted)])[-1]
    return _first_origin(conf, dotted.rsplit(".", 1)[0])


def _known_keys(dotted: str) -> str:
    from pydantic import BaseModel

    model: Any = Settings
    for part in dotted.split(".")[:-1]:
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return "none"
        annotation = field.annotation
        args = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type)]
        model = next((a for a in [annotation, *args] if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:  # a user-named map (sources.<name>): the next part is the name
            return "none"
    return ", ".join(model.model_fields)


def _message(conf: Conf, error: dict) -> str:
    """One line for a pydantic error: the file, the dotted key, what it must be, what it got."""
    loc = [str(p) for p in error["loc"] if not str(p).startswith(("function-", "constrained-"))]
    kind, value = error["type"], error.get("input")
    if loc and loc[-1] in ("str", "int", "float", "bool") and len(loc) > 1:  # a Scalar union
        dotted = ".".join(loc[:-1])
        return (f"{_first_origin(conf, dotted)}: {dotted} must be a single value (text, a number "
                f"or true/false), got {value!r}")
    dotted = ".".join(loc)
    where = _first_origin(conf, dotted)
    if kind == "extra_forbidden":
        known = _known_keys(dotted) if not dotted.startswith("sources.") else _source_keys(loc)
        return f"{where}: unknown key {dotted!r} (known keys here: {known})"
    if kind == "missing":
        return f"{where}: {dotted} is required"
    if kind in _TYPE_NAMES:
        return f"{where}: {dotted} must be {_TYPE_NAMES[kind]}, got {value!r}"
    if kind in ("literal_error", "enum"):
        choices = error.get("ctx", {}).get("expected", "").replace("'", "").replace(" or ", ", ")
        return f"{where}: {dotted} must be one of {choices}, got {value!r}"
    ctx = error.get("ctx", {})
    for bound, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if bound in ctx and kind.startswith(("greater", "less")):
            return f"{where}: {dotted} must be {symbol} {ctx[bound]}, got {value!r}"
    if kind == "too_short":
        return f"{where}: {dotted} needs at least {ctx.get('min_length')} value(s), got {value!r}"
    if kind == "too_long":
        return f"{where}: {dotted} takes at most {ctx.get('max_length')} value(s), got {value!r}"
    text = error["msg"].removeprefix("Value error, ")
    if text.startswith(".") and ": " in text:  # a validator naming the key below its field
        key, text = text[1:].split(": ", 1)
        dotted = f"{dotted}.{key}" if dotted else key
        where = _first_origin(conf, dotted)
    if text.startswith(("must ", "is ", "needs ", "names ")):
        return f"{where}: {dotted} {text}"
    return f"{where}: {dotted + ': ' if dotted else ''}{text}"


def _source_keys(loc: list[str]) -> str:
    from shopsense.core.settings import OrdersSpec, SourceSpec

    return ", ".join(SourceSpec.model_fields if len(loc) <= 3 else OrdersSpec.model_fields)


def _required_left_open(conf: Conf, node: Mapping, prefix: str = "") -> None:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if value == REQUIRED:
            raise ConfigError(f"{conf.origin(dotted)}: {dotted} is required and has no value "
                              f"(set it in an overlay or with --set {dotted}=...)")
        if isinstance(value, Mapping) and dotted not in OPEN_MAPS:
            _required_left_open(conf, value, dotted + ".")


def _validate(conf: Conf) -> None:
    """Type the merged mapping into :class:`Settings`; raises ConfigError on the first problem."""
    from pydantic import ValidationError

    _required_left_open(conf, conf)
    try:
        conf.settings = Settings.model_validate(dict(conf))
    except ValidationError as exc:
        raise ConfigError(_message(conf, exc.errors()[0])) from None


def resolve_path(path: str) -> str:
    """A path from conf as Spark should see it: URIs (``scheme://``) unchanged, local paths made
    absolute against the working directory."""
    if "://" in path or path.startswith("file:"):
        return path
    return os.path.abspath(os.path.expanduser(path))


def default_overlays() -> list[Path]:
    """The overlay used when none is named: conf/local.yaml (the embedded default)."""
    return [conf_dir() / "local.yaml"]
