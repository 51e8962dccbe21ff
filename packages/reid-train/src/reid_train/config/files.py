"""A run's configuration as data: nested dicts to and from :class:`TrainConfig`,
``key=value`` overrides, YAML files (with ``base:``) read by :func:`load_config` and written by
:func:`save_config`. Finding a file by name (``--config NAME``) is
:mod:`reid_train.config.lookup`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
import typing
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .. import registry as _methods
from .coercion import Mismatch, accepts_str, coerce, describe, field_types, show
from .schema import _SECTIONS, ConfigError, ConfigWarning
from .validation import TrainConfig

__all__ = [
    "BASE_KEY",
    "apply_overrides",
    "config_from_dict",
    "config_keys",
    "config_to_dict",
    "load_config",
    "save_config",
]


# --------------------------------------------------------------------------------------------
# dict <-> dataclasses
# --------------------------------------------------------------------------------------------


def config_keys() -> list[str]:
    """Every valid dotted key, e.g. ``optim.lr`` (free-form mappings appear once; ``method.*``
    lists the shared keys and every registered recipe's own keys)."""
    keys = []
    for section in _SECTIONS:
        keys.extend(f"{section}.{name}" for name in _section_types(section))
    return keys


def _section_types(section: str) -> dict[str, Any]:
    """The keys a section accepts with their annotations: the dataclass's fields; for
    ``method`` its shared fields and the own keys of every registered recipe (which recipe
    holds which is checked when the config is validated)."""
    types_ = field_types(_SECTIONS[section])
    if section != "method":
        return types_
    shared = {k: v for k, v in types_.items() if k != "options"}
    return {**shared, **{k: v for k, v in _methods.option_types().items() if k not in shared}}


def _unknown_key(key: str, source: str) -> ConfigError:
    pool = config_keys() if "." in key else list(_SECTIONS) + config_keys()
    close = difflib.get_close_matches(key, pool, n=3, cutoff=0.6)
    if not close:
        # Match the last component alone ("lrr" or "optim.lrr" -> optim.lr).
        leaf = key.rsplit(".", 1)[-1]
        by_leaf: dict[str, list[str]] = {}
        for k in pool:
            by_leaf.setdefault(k.rsplit(".", 1)[-1], []).append(k)
        for match in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.6):
            close.extend(by_leaf[match])
    if close:
        hint = f"; did you mean {' or '.join(repr(c) for c in close[:3])}?"
    else:
        section = key.split(".", 1)[0]
        if section in _SECTIONS:
            valid = list(_section_types(section))
            hint = f"; valid keys of '{section}': {', '.join(valid)}"
        else:
            hint = f"; valid sections: {', '.join(_SECTIONS)}"
    return ConfigError(f"unknown config key '{key}' in {source}{hint}")


def _check_keys(data: Any, source: str) -> dict[str, Any]:
    """``data`` as a dict of section dicts, every key known; else a ConfigError."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source} must hold a mapping of sections ({', '.join(_SECTIONS)}), "
            f"got {type(data).__name__}"
        )
    out: dict[str, Any] = {}
    for name, values in data.items():
        if name not in _SECTIONS:
            raise _unknown_key(str(name), source)
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"section '{name}' in {source} must be a mapping of keys, "
                f"got {type(values).__name__}"
            )
        types_ = _section_types(name)
        for key in values:
            if key not in types_:
                raise _unknown_key(f"{name}.{key}", source)
        out[name] = dict(values)
    return out


def config_from_dict(data: Mapping[str, Any] | None, source: str = "<dict>") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from nested mappings (missing keys: defaults).

    Raises:
        ConfigError: unknown keys (with suggestions), wrong types, invalid values.
    """
    sections: dict[str, Any] = {}
    for name, values in _check_keys(data, source).items():
        cls = _SECTIONS[name]
        types_ = field_types(cls)
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if name == "method" and (key not in types_ or key == "options"):
                # a recipe's own key: typed by its recipe when the config is validated
                kwargs.setdefault("options", {})[key] = value
                continue
            try:
                kwargs[key] = coerce(value, types_[key])
            except Mismatch:
                raise ConfigError(
                    f"{name}.{key} in {source} must be {describe(types_[key])}, got {show(value)}"
                ) from None
        sections[name] = cls(**kwargs)
    return TrainConfig(**sections).validate()


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Nested plain dict (YAML-ready: lists, not tuples) of a configuration."""
    out: dict[str, Any] = {}
    for name in _SECTIONS:
        section = getattr(config, name)
        out[name] = {f.name: _plain(getattr(section, f.name)) for f in dataclasses.fields(section)}
    # the recipe's own keys sit flat in the method section, after the shared ones
    out["method"].update(_plain(out["method"].pop("options")))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Overrides, files
# --------------------------------------------------------------------------------------------


def _parse_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} must look like key=value with a dotted key, e.g. optim.lr=1e-4"
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key; use e.g. optim.lr=1e-4")
    return key, raw.strip()


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str], source: str = "the command line"
) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides to a nested dict (in place; returned).

    Values are parsed as YAML (``true``/``false``, ``null``, numbers, ``[20, 40]``); a string
    field keeps the raw text when YAML would read something else (``runtime.output_dir=2024``).
    Keys of a mapping field go one level deeper: ``data.dataset_options.include_val=false``.

    Raises:
        ConfigError: a malformed item or an unknown key (with the closest valid keys).
    """
    for item in overrides:
        key, raw = _parse_override(item)
        parts = key.split(".")
        section = parts[0]
        if section not in _SECTIONS or len(parts) < 2:
            raise _unknown_key(key, source)
        types_ = _section_types(section)
        name = parts[1]
        if name not in types_:
            raise _unknown_key(key, source)
        tp = types_[name]
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse the value ({e})") from None
        sect = data.setdefault(section, {})
        if sect is None:
            sect = data[section] = {}
        if typing.get_origin(tp) is dict:
            mapping = sect.get(name)
            if not isinstance(mapping, dict):
                mapping = sect[name] = {}
            if len(parts) == 2:
                if not isinstance(value, Mapping):
                    raise ConfigError(
                        f"{key} is a mapping: set one entry ({key}.NAME=VALUE) or give "
                        f"{{name: value}}, got {raw!r}"
                    )
                sect[name] = dict(value)
            else:
                mapping[".".join(parts[2:])] = value
            continue
        if len(parts) > 2:
            raise _unknown_key(key, source)
        if accepts_str(tp) and value is not None and not isinstance(value, str):
            value = raw  # a string field: "no", "2024", "1.0" stay text
        try:
            coerce(value, tp)
        except Mismatch:
            raise ConfigError(
                f"override {item!r}: {key} must be {describe(tp)}, got {show(value)}"
            ) from None
        sect[name] = value
    return data


def load_config(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a YAML configuration file and apply ``key=value`` overrides.

    Args:
        path: a YAML file whose top-level keys are sections (data, model, cluster, method,
            optim, runtime); missing keys take the defaults of the dataclasses. A top-level
            ``base: other.yaml`` (relative to the file; a chain of bases is allowed) is read
            first and the file's keys override it (sections merge key by key, option
            mappings such as ``data.synthetic_options`` too; lists are replaced): a dataset
            variant of a recipe is a few lines. The saved ``config.yaml`` of a run is always
            the resolved configuration, with no ``base``.
        overrides: items like ``optim.lr=1e-4``, ``method.use_aals=false``,
            ``model.pretrained=null``, ``optim.milestones=[20,40]``.

    Returns:
        A validated :class:`TrainConfig`.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: unparsable YAML, unknown keys (file or override; the message names the key
            and the closest valid ones), wrong types or invalid values.
    """
    path = Path(path)
    if path.is_dir():
        examples = sorted(p.name for p in path.glob("*.yaml"))[:5]
        hint = f" (it holds {', '.join(examples)})" if examples else ""
        raise FileNotFoundError(
            f"--config '{path}' is a folder; give a YAML file in it{hint}, e.g. "
            f"--config {path / (examples[0] if examples else 'pplr_market1501.yaml')}"
        )
    data = _read_with_bases(path, ())
    source = f"'{path}'"
    overrides = list(overrides)
    if overrides:
        before = dict(data.get("method") or {})
        apply_overrides(data, overrides)
        _switch_recipe(data, before, overrides, path)
        source += " with overrides"
    return config_from_dict(data, source)


def _switch_recipe(
    data: dict[str, Any], before: dict[str, Any], overrides: list[str], path: Path
) -> None:
    """An override of ``method.name`` replaces the file's recipe with its keys: the file's own
    keys of the old recipe that the new one does not have are left out, with a warning naming
    them (``--config pplr_x.yaml method.name=dcls`` trains DCLS with its defaults). Keys given
    on the command line are never left out: one that does not fit the new recipe is refused
    when the config is validated."""
    method = data.get("method") or {}
    old, new = before.get("name", "pplr"), method.get("name", "pplr")
    if old == new or not isinstance(new, str) or new not in _methods.names():
        return
    given = {_parse_override(o)[0] for o in overrides}
    shared = set(field_types(_SECTIONS["method"]))
    own = _methods.option_types(new)
    dropped = [k for k in before if k not in shared and k not in own and f"method.{k}" not in given]
    for key in dropped:
        del method[key]
    if dropped:
        warnings.warn(
            f"method.name={new} replaces {old!r} of '{path}': its keys "
            f"{', '.join(f'method.{k}' for k in dropped)} do not apply to {new!r} and are left "
            "out",
            ConfigWarning,
            stacklevel=3,
        )


#: The top-level key naming the config a file extends.
BASE_KEY = "base"


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The sections of the YAML file ``path``, merged over those of its ``base`` (recursively);
    every file's keys are checked and named as that file's."""
    if not path.is_file():
        if chain:
            raise ConfigError(f"'{chain[-1]}' has base: '{path}', which does not exist")
        raise FileNotFoundError(f"config file '{path}' does not exist")
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"config bases form a cycle: {cycle}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse the YAML of '{path}': {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"'{path}' is not a UTF-8 text file ({e.reason} at byte {e.start}): a config is a "
            "YAML text file; check the path"
        ) from None
    base = None
    if isinstance(data, Mapping) and BASE_KEY in data:
        data = dict(data)
        base = data.pop(BASE_KEY)
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(
                f"'{path}': {BASE_KEY} must be the path of another YAML config (relative to "
                f"this file), got {base!r}"
            )
    own = _check_keys(data, f"'{path}'")  # the file's own mistakes are named as the file's
    if base is None:
        return own
    return _merged(_read_with_bases(path.parent / base, (*chain, path.resolve())), own)


def _merged(base: dict[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: mappings merge key by key (recursively), anything else (values,
    lists, null) replaces."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(dict(out[key]), value)
        else:
            out[key] = value
    return out


class _Dumper(yaml.SafeDumper):
    """Block-style sections, flow-style lists (``milestones: [20, 40]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_Dumper.add_representer(list, _represent_list)

_HEADER = "# Resolved reid-train configuration: reid-train --config {name} reproduces the run.\n"


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved configuration as YAML, atomically (temporary file + rename).

    ``config`` is validated first (which also fills a null ``model.arch``).

    Returns:
        The path written. :func:`load_config` on it gives a configuration equal to ``config``.
    """
    config.validate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _HEADER.format(name=path.name) + yaml.dump(
        config_to_dict(config), Dumper=_Dumper, sort_keys=False, default_flow_style=False
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
