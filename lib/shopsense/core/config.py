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

from shopsense.core import columns as C

REQUIRED = "???"
SET_ORIGIN = "--set"

# Keys whose base default is null, and the type a value must have when one is given.
NULLABLE_TYPES: dict[str, type] = {
    "report.path": str,
    "as_of": str,
    "spark.master": str,
    "spark.jars": str,
    "spark.checkpoint_dir": str,
    "features.window_days": int,
    "segment.k": int,
    "segment.model_path": str,
    "basket_rules.min_support_count": int,
    "basket_rules.num_partitions": int,
    "recommend.recency_half_life_days": float,
    "recommend.events.source": str,
}
# Keys whose value is restricted to a fixed set.
CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": ("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"),
    "spark.python": ("driver", "inherit"),
    "basket_rules.level": ("sku", "category"),
    "basket_rules.algorithm": ("levelwise", "fpgrowth"),
    "forecast.information_criterion": ("aic", "bic"),
    "forecast.intermittent_method": ("tsb", "croston"),
    "recommend.strength": ("log1p", "quantity"),
    "recommend.select_by": ("precision", "recall", "ndcg", "map", "hit_rate"),
    "recommend.als.intermediate_storage": ("MEMORY_ONLY", "MEMORY_AND_DISK", "MEMORY_ONLY_SER",
                                           "MEMORY_AND_DISK_SER", "DISK_ONLY"),
    "recommend.als.final_storage": ("MEMORY_ONLY", "MEMORY_AND_DISK", "MEMORY_ONLY_SER",
                                    "MEMORY_AND_DISK_SER", "DISK_ONLY"),
    "inventory.service_measure": ("fill_rate", "cycle"),
}
# Maps whose keys the user names (each value is a scalar).
OPEN_MAPS = ("spark.conf",)

FILE_FORMATS = ("csv", "parquet", "json")
SOURCE_PARTS = {"orders": C.ORDER_COLUMNS, "catalogue": C.CATALOGUE_COLUMNS,
                "inventory": C.INVENTORY_COLUMNS}
FILE_SPEC_KEYS = {"path": str, "format": str, "options": dict, "columns": dict,
                  "timestamp_format": str, "cancel_prefix": str}


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
    except yaml.YAMLError:
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
    """The validated configuration: a plain nested dict plus where each value came from."""

    origins: dict[str, str]

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
        master = self.get_path("spark.master") or ""
        return master.startswith("local")


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
    _validate(conf, base_tree)
    return conf


def _type_name(t: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list", dict: "a mapping"}.get(t, t.__name__)


def _check_type(conf: Conf, dotted: str, value: Any, expected: type) -> None:
    ok = isinstance(value, expected)
    if expected is int and isinstance(value, bool):
        ok = False
    if expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ConfigError(f"{conf.origin(dotted)}: {dotted} must be {_type_name(expected)}, "
                          f"got {value!r}")


def _validate(conf: Conf, base_tree: dict) -> None:
    _validate_tree(conf, conf, base_tree, "")
    _validate_sources(conf)
    for dotted, choices in CHOICES.items():
        value = conf.get_path(dotted)
        if value is not None and value not in choices:
            raise ConfigError(f"{conf.origin(dotted)}: {dotted} must be one of "
                              f"{', '.join(choices)}, got {value!r}")
    source = conf.get_path("ingest.source")
    if source not in conf.get("sources", {}):
        raise ConfigError(f"{conf.origin('ingest.source')}: ingest.source names {source!r}, which is "
                          f"not among sources: {', '.join(sorted(conf.get('sources', {})))}")
    as_of = conf.get_path("as_of")
    if as_of is not None:
        try:
            dt.date.fromisoformat(str(as_of))
        except ValueError:
            raise ConfigError(f"{conf.origin('as_of')}: as_of must be a date YYYY-MM-DD, "
                              f"got {as_of!r}") from None


def _validate_tree(conf: Conf, node: Mapping, base_node: Mapping, prefix: str) -> None:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if dotted == "sources":
            continue  # validated by _validate_sources: the user names the sources
        if key not in base_node:
            known = ", ".join(sorted(str(k) for k in base_node)) or "none"
            raise ConfigError(f"{conf.origin(dotted)}: unknown key {dotted!r} "
                              f"(known keys here: {known})")
        default = base_node[key]
        if value == REQUIRED:
            raise ConfigError(f"{conf.origin(dotted)}: {dotted} is required and has no value "
                              f"(set it in an overlay or with --set {dotted}=...)")
        if dotted in OPEN_MAPS:
            _check_type(conf, dotted, value, dict)
            for sub, subval in value.items():
                if isinstance(subval, (dict, list)):
                    raise ConfigError(f"{conf.origin(f'{dotted}.{sub}')}: {dotted}.{sub} must be "
                                      f"a single value, got {subval!r}")
            continue
        if isinstance(default, dict):
            _check_type(conf, dotted, value, dict)
            _validate_tree(conf, value, default, dotted + ".")
        elif default is None or default == REQUIRED:
            expected = NULLABLE_TYPES.get(dotted, str)
            if value is not None:
                _check_type(conf, dotted, value, expected)
        else:
            if value is None:
                raise ConfigError(f"{conf.origin(dotted)}: {dotted} must be "
                                  f"{_type_name(type(default))}, got null")
            _check_type(conf, dotted, value, type(default))


def _validate_sources(conf: Conf) -> None:
    sources = conf.get("sources")
    _check_type(conf, "sources", sources, dict)
    for name, spec in sources.items():
        where = f"sources.{name}"
        _check_type(conf, where, spec, dict)
        if "orders" not in spec:
            raise ConfigError(f"{conf.origin(where)}: {where}.orders is required "
                              f"(the order lines file spec)")
        for part, file_spec in spec.items():
            dotted = f"{where}.{part}"
            if part not in SOURCE_PARTS:
                raise ConfigError(f"{conf.origin(dotted)}: unknown key {dotted!r} "
                                  f"(known keys here: {', '.join(SOURCE_PARTS)})")
            _validate_file_spec(conf, dotted, file_spec, SOURCE_PARTS[part])


def _validate_file_spec(conf: Conf, where: str, spec: Any, canonical: tuple[str, ...]) -> None:
    _check_type(conf, where, spec, dict)
    for key, value in spec.items():
        dotted = f"{where}.{key}"
        if key not in FILE_SPEC_KEYS:
            raise ConfigError(f"{conf.origin(dotted)}: unknown key {dotted!r} "
                              f"(known keys here: {', '.join(FILE_SPEC_KEYS)})")
        if value is not None:
            _check_type(conf, dotted, value, FILE_SPEC_KEYS[key])
    if not spec.get("path") or spec.get("path") == REQUIRED:
        raise ConfigError(f"{conf.origin(where)}: {where}.path is required")
    fmt = spec.get("format", "csv")
    if fmt not in FILE_FORMATS:
        raise ConfigError(f"{conf.origin(where + '.format')}: {where}.format must be one of "
                          f"{', '.join(FILE_FORMATS)}, got {fmt!r}")
    for canon, source_col in (spec.get("columns") or {}).items():
        dotted = f"{where}.columns.{canon}"
        if canon not in canonical:
            raise ConfigError(f"{conf.origin(dotted)}: {dotted}: {canon!r} is not a canonical "
                              f"column (expected one of {', '.join(canonical)})")
        _check_type(conf, dotted, source_col, str)


def resolve_path(path: str) -> str:
    """A path from conf as Spark should see it: URIs (``scheme://``) unchanged, local paths made
    absolute against the working directory."""
    if "://" in path or path.startswith("file:"):
        return path
    return os.path.abspath(os.path.expanduser(path))


def default_overlays() -> list[Path]:
    """The overlay used when none is named: conf/local.yaml (the embedded default)."""
    return [conf_dir() / "local.yaml"]
