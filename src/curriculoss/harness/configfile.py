"""`--config FILE`: a command's options read from a TOML (or, with PyYAML, YAML) file.

The file holds the command's long options without their dashes, `noise-rate = 0.4` or
`noise_rate = 0.4`; a switch is true or false, an option of several values a list
(`seeds = [0, 1, 2]`, `milestones = [60, 120]`). The values become the command line's own tokens,
placed before the options typed after the command, so those override the file and every value is
checked as the option's own would be. Every run folder holds its options as `config.toml`
(`curriculoss.harness.config.toml_text`), which `--config` reads back.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

__all__ = ["with_config_file", "given_options"]

#: Options a file may not set: they say what to do with a folder, or name another file.
_NOT_IN_FILE = ("config", "resume", "overwrite", "help", "version")


def _fail(message: str):
    raise SystemExit(f"curriculoss: error: {message}")


def _read_options(path: str | os.PathLike) -> dict:
    """The table of a TOML (or, with PyYAML, YAML) file; errors name the file."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        _fail(f"--config {path}: {exc.strerror or exc}")
    if path.suffix.lower() in (".yaml", ".yml"):
        data = _yaml(path, text)
    else:
        data = _toml(path, text)
    if not isinstance(data, dict):
        _fail(f"--config {path}: expected a table of options (key = value), got {type(data).__name__}")
    return data


def _toml(path: Path, text: bytes) -> dict:
    import tomllib

    return _parse(path, text, tomllib.loads, tomllib.TOMLDecodeError, "TOML")


def _yaml(path: Path, text: bytes):
    try:
        import yaml
    except ImportError:
        _fail(f"--config {path}: reading YAML needs PyYAML (pip install pyyaml); or write the file as TOML")
    return _parse(path, text, yaml.safe_load, yaml.YAMLError, "YAML")


def _parse(path: Path, text: bytes, loads, error: type[Exception], kind: str):
    """`loads` of the UTF-8 `text`; a file it cannot read is a one-line error naming it."""
    try:
        return loads(text.decode("utf-8"))
    except (UnicodeDecodeError, error) as exc:
        _fail(f"--config {path}: not valid {kind} ({' '.join(str(exc).split())})")


def _dest(key: str) -> str:
    return key.lstrip("-").replace("-", "_")


def _config_tokens(path: str | os.PathLike, parser: argparse.ArgumentParser) -> list[str]:
    """The command-line tokens of the options in the file at `path`, for the command of `parser`."""
    data = _read_options(path)
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in _NOT_IN_FILE}
    unknown = [k for k in data if _dest(str(k)) not in actions]
    if unknown:
        hint = "; config, resume and overwrite go on the command line" \
            if any(_dest(str(k)) in _NOT_IN_FILE for k in unknown) else ""
        _fail(f"--config {path}: unknown option(s) {', '.join(repr(k) for k in unknown)}; a key is a long option "
              f"of `{parser.prog}` without its dashes (e.g. noise-rate = 0.4){hint}")
    seen: dict[str, str] = {}
    tokens: list[str] = []
    for key, value in data.items():
        dest = _dest(key)
        if dest in seen:
            _fail(f"--config {path}: option {key!r} given twice (also as {seen[dest]!r})")
        seen[dest] = key
        tokens += _tokens(path, key, actions[dest], value)
    return tokens


def _tokens(path, key: str, action: argparse.Action, value) -> list[str]:
    option = max(action.option_strings, key=len)
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool):
            _fail(f"--config {path}: {key}: expected true or false, got {value!r}")
        return [option] if value else []
    items = value if isinstance(value, list) else [value]
    bad = [v for v in items if isinstance(v, bool) or not isinstance(v, (int, float, str))]
    if bad:
        _fail(f"--config {path}: {key}: expected a number or a string{' or a list of them' if action.nargs else ''}, "
              f"got {bad[0]!r}")
    texts = [repr(v) if isinstance(v, float) else str(v) for v in items]
    if action.nargs in ("+", "*"):
        return [option, *texts]
    if isinstance(value, list):  # --milestones 60,120 as [60, 120]
        return [f"{option}={','.join(texts)}"] if texts else []
    return [f"{option}={texts[0]}"]


def with_config_file(argv: list[str], args: argparse.Namespace, build_parser: Callable) -> list[str]:
    """`argv` with the options of `--config FILE` placed right after the command, where the options
    typed after it override them; the file's options are checked on their own first, so that an error
    in one names the file. `build_parser`: the command line's (`curriculoss.harness.cli.build_parser`)."""
    tokens = _config_tokens(args.config, build_parser().commands[args.command])
    in_file = build_parser(prefix=f"--config {args.config}: ").parse_args([args.command, *tokens])
    _check_file_model(args.config, getattr(in_file, "model", None), given_options(argv, build_parser))
    at = argv.index(args.command) + 1
    return [*argv[:at], *tokens, *argv[at:]]


def _check_file_model(path: str, model: str | None, given: set[str]) -> None:
    """A file is data: a model that is code (`package.module:factory`) is imported only when the command
    line names it (a run folder's `config.toml` may come from anyone)."""
    from curriculoss.harness.models import is_factory

    if model is not None and is_factory(model) and "model" not in given:
        raise SystemExit(f"curriculoss: error: --config {path}: its model {model!r} is code, which is never "
                         f"imported because a file names it; give --model {model} to import it from your Python path")


def given_options(argv: list[str] | None, build_parser: Callable) -> set[str]:
    """The options that the command line names (whatever their values), by argparse destination;
    `build_parser`: the command line's (`curriculoss.harness.cli.build_parser`)."""
    return set(vars(build_parser(defaults=False).parse_args(argv))) - {"command"}

