"""Options of long-running commands from a TOML file and the environment, too.

Every long option of a command that uses this (`flopwatch agent`, `flopwatch collector`) is also
  - a key of the TOML file given with --config: the option's long name with '_' for '-'
    (`--spool-max-bytes` -> `spool_max_bytes = 268435456`), flat, no tables;
  - an environment variable: the command's prefix and the key in capitals
    (FLOPWATCH_AGENT_SPOOL_MAX_BYTES=268435456); PREFIX + CONFIG names the file.
Precedence: command line > environment > file > default. File values keep their TOML types
(a number for a number, true/false for a switch, a list for a comma-separated option marked
with `toml_accepts`, a table of strings for a NAME=VALUE,... option marked so, e.g.
`[account_map]`); environment values are text, read like the command line's (switches take
1/true/yes/on or 0/false/no/off). An unknown key or variable, or a value of the wrong type, is a
ConfigError naming the key and where it came from; so is a file that is not TOML text (binary,
not UTF-8, larger than flopwatch.reads.MAX_SMALL_FILE_BYTES).

Kubernetes injects variables for every Service of a namespace into its pods
(`flopwatch.cli.service_links`); those that share the prefix (FLOPWATCH_COLLECTOR_SERVICE_HOST,
FLOPWATCH_AGENT_METRICS_PORT_9465_TCP, ...) are ignored, not refused as unknown.

How: `add_config_file` makes each option's action note on the parsed namespace that it ran,
i.e. that the option was given on the command line (parse results stay plain values); `resolve`
fills the others from the environment or the file, converting like argparse would, and leaves
the rest at their defaults.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flopwatch.cli.service_links import is_service_link
from flopwatch.errors import ConfigError
from flopwatch.reads import MAX_SMALL_FILE_BYTES, read_limited

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


GIVEN = "_given_on_command_line"  # namespace attribute: dests of the options given
_TOML_TYPES = "_flopwatch_toml_types"  # action attribute: what `toml_accepts` allowed
_TRACKED: dict[type[argparse.Action], type[argparse.Action]] = {}


def _tracked(cls: type[argparse.Action]) -> type[argparse.Action]:
    """A subclass of an action class that records, on the namespace, that it ran."""
    if cls not in _TRACKED:

        def __call__(
            self: argparse.Action,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            given: set[str] = getattr(namespace, GIVEN, set())
            setattr(namespace, GIVEN, given | {self.dest})
            cls.__call__(self, parser, namespace, values, option_string)

        _TRACKED[cls] = type(f"Tracked{cls.__name__}", (cls,), {"__call__": __call__})
    return _TRACKED[cls]


@dataclass(frozen=True)
class _Option:
    key: str
    flag: str
    action: argparse.Action
    required: bool

    @property
    def is_switch(self) -> bool:
        return self.action.nargs == 0 and isinstance(self.action.const, bool)

    @property
    def toml_types(self) -> tuple[type, ...]:
        kinds: tuple[type, ...] = getattr(self.action, _TOML_TYPES, ())
        return kinds

    def expected(self) -> str:
        kind = self.action.type
        if self.is_switch:
            return "true or false"
        if kind is int:
            return "an integer"
        if kind is float:
            return "a number"
        if kind is None or kind is Path:
            extra = self.toml_types
            words = ["a string"]
            if float in extra:
                words.append("a number")
            elif int in extra:
                words.append("an integer")
            if list in extra:
                words.append("a list")
            if dict in extra:
                words.append("a table of strings")
            return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]
        return "a string or a number"


def toml_accepts(action: argparse.Action, *kinds: type) -> argparse.Action:
    """Let a text option's TOML key also take TOML numbers (int, float) or a list (list: its
    items, strings or numbers, are joined with ',' as the command line writes them). The value
    is then read as the command line's text would be: `verify_workers = 2`, `thresholds = [1e23,
    1e24]`. dict: a table of string values, given to the option as a dict of str -> str (the
    option's own type reads NAME=VALUE,... text into the same). Returns `action`."""
    setattr(action, _TOML_TYPES, kinds)
    return action


def epilog(prefix: str, example: str) -> str:
    key = example.removeprefix("--").replace("-", "_")
    return (
        "Every option can also be given in a TOML file named by --config (key: the long option "
        f"name with '_' for '-', e.g. {example} becomes {key} = ...), or in an environment "
        f"variable {prefix}<KEY> (e.g. {prefix}{key.upper()}). Precedence: command line, then "
        f"environment, then file, then the default. {prefix}CONFIG names the file too; the log "
        "options (--log-level, --log-json) go before the command."
    )


class ConfigSpec:
    """The options of one command and how to resolve them."""

    def __init__(self, options: list[_Option], prefix: str) -> None:
        self._options = {o.key: o for o in options}
        self._prefix = prefix

    def resolve(self, args: argparse.Namespace, environ: Mapping[str, str]) -> argparse.Namespace:
        env = self._environment(environ)
        path: Path | None = args.config
        if path is None and "config" in env:
            path = Path(env.pop("config"))
        env.pop("config", None)
        file_values = load_toml(path, set(self._options)) if path is not None else {}
        out = argparse.Namespace(**vars(args))
        given = vars(out).pop(GIVEN, set())
        out.config = path
        for key, opt in self._options.items():
            value = getattr(args, opt.action.dest)
            if opt.action.dest in given:
                pass  # the command line wins
            elif key in env:
                value = _from_text(opt, env[key], f"environment variable {self._var(key)}")
            elif key in file_values:
                value = _from_file(opt, file_values[key], f"{path}: key {key!r}")
            if opt.required and value is None:
                raise ConfigError(
                    f"{opt.flag} is required: give it on the command line, as "
                    f"{self._var(key)} or as {key} = ... in the config file"
                )
            setattr(out, opt.action.dest, value)
        return out

    def _var(self, key: str) -> str:
        return self._prefix + key.upper()

    def _environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        out = {}
        for name, value in environ.items():
            if not name.startswith(self._prefix):
                continue
            key = name.removeprefix(self._prefix).lower()
            if key != "config" and key not in self._options and is_service_link(name, value):
                continue  # Kubernetes' variables for a Service (enableServiceLinks)
            if key != "config" and key not in self._options:
                raise ConfigError(
                    f"unknown environment variable {name}; known: {self._prefix}CONFIG, "
                    + ", ".join(self._var(k) for k in sorted(self._options))
                )
            out[key] = value
        return out


def load_toml(path: Path, known: set[str]) -> dict[str, Any]:
    try:
        raw = read_limited(path, MAX_SMALL_FILE_BYTES, "config file")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {path} is not TOML text (byte {e.start} is not UTF-8): is it the "
            "right file?"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; known keys: "
            + ", ".join(sorted(known))
        )
    return data


def _from_text(opt: _Option, text: str, where: str) -> Any:
    if opt.is_switch:
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(f"{where}: expected 1/true/yes/on or 0/false/no/off, got {text!r}")
        return (word in _TRUE) == opt.action.const
    kind = opt.action.type
    try:
        value = kind(text) if callable(kind) else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
        if kind in (int, float):
            raise ConfigError(f"{where}: {text!r} is not {opt.expected()}") from None
        raise ConfigError(f"{where}: invalid value {text!r}: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if opt.action.choices is not None and value not in opt.action.choices:
        choices = ", ".join(map(str, opt.action.choices))
        raise ConfigError(f"{where}: {text!r} is not one of {choices}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _from_file(opt: _Option, value: Any, where: str) -> Any:
    kind = opt.action.type
    if opt.is_switch:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value == opt.action.const
    if isinstance(value, str):
        return _from_text(opt, value, where)
    extra = opt.toml_types
    if isinstance(value, dict) and dict in extra:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ConfigError(f"{where}: expected a table of strings, got {value!r}")
        return dict(value)
    if isinstance(value, list) and list in extra:
        if not value or not all(isinstance(v, str) or _is_number(v) for v in value):
            raise ConfigError(
                f"{where}: expected a non-empty list of strings or numbers, got {value!r}"
            )
        return _from_text(opt, ",".join(map(str, value)), where)
    numeric = _is_number(value)
    if numeric and kind is float:
        return float(value)
    if numeric and kind is int and isinstance(value, int):
        return value
    if numeric and (kind not in (None, Path, int) or type(value) in extra):
        return _from_text(opt, str(value), where)  # e.g. a number for "a number or 'max'"
    raise ConfigError(f"{where}: expected {opt.expected()}, got {value!r}")


def add_config_file(
    parser: argparse.ArgumentParser, *, env_prefix: str, run: Callable[[argparse.Namespace], int]
) -> None:
    """Let `parser`'s options come from a TOML file and the environment as well.

    Call it after all options are added. `run` then receives the resolved options.
    """
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help=f"read options from this TOML file (keys below; also {env_prefix}CONFIG)",
    )
    options = []
    for action in parser._actions:
        flags = [s for s in action.option_strings if s.startswith("--")]
        if not flags or action.dest in ("help", "config", "version"):
            continue
        key = flags[0].removeprefix("--").replace("-", "_")
        options.append(_Option(key, flags[0], action, action.required))
        action.__class__ = _tracked(type(action))
        action.required = False  # the environment or the file may give it
    spec = ConfigSpec(options, env_prefix)
    example = next((o.flag for o in options if "-" in o.flag[2:]), options[0].flag)
    parser.epilog = epilog(env_prefix, example)
    parser.set_defaults(run=lambda args: run(spec.resolve(args, os.environ)))
