"""Generate the reference pages of the docs site at build time (mkdocs-gen-files).

- ``reference/configuration.md``: every setting of ``nightowl.toml``, walked from the settings
  models (the root ``Settings`` in ``nightowl.flows.settings`` and its nested sections): key,
  type, default, environment variable and description, one table per section.
- ``reference/commands.md``: every command of the ``nightowl`` typer app, walked as click
  commands: usage, help text and options.
- ``reference/tables.md``: every warehouse table, from the registry in
  ``nightowl.warehouse.tables``: layer, name, partition key, each column with its dtype, and
  what one row is.

Nothing here is written by hand, so the pages cannot drift from the code. Run it directly to
print a page instead: ``.venv/bin/python docs/gen_reference.py configuration|commands|tables``.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
from collections.abc import Iterator
from datetime import date
from enum import Enum
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined

# --------------------------------------------------------------------------- markdown helpers

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def _escape(text: str) -> str:
    """Plain text as Markdown that shows it as written: code spans kept, the rest escaped."""
    out, last = [], 0
    for match in _CODE_SPAN.finditer(text):
        out.append(_escape_plain(text[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_escape_plain(text[last:]))
    return "".join(out)


def _escape_plain(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;")
    text = text.replace(">", "&gt;")
    for char in "*_[]|":
        text = text.replace(char, "\\" + char)
    return text


def _cell(text: str) -> str:
    """Text for a table cell: one line. Pipes are escaped already where they are text, and a
    pipe inside a code span does not split the row."""
    return " ".join(text.split())


def _code(text: str) -> str:
    """``text`` as a code span (longer fences when it holds backticks)."""
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _prose(doc: str | None) -> str:
    """A docstring as Markdown paragraphs (``code`` in reST becomes `code`)."""
    if not doc:
        return ""
    doc = inspect.cleandoc(doc).replace("``", "`")
    paragraphs = [" ".join(p.split()) for p in doc.split("\n\n")]
    return "\n\n".join(_escape(p) for p in paragraphs if p)


# --------------------------------------------------------------------------- configuration


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(``X``, True) for ``X | None``; (annotation, False) otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) < len(get_args(annotation)) and len(args) == 1:
            return args[0], True
    return annotation, False


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:
    """A reader's name for a setting's type."""
    inner, optional = _unwrap_optional(annotation)
    origin, args = get_origin(inner), get_args(inner)
    if origin is Literal:
        name = " \\| ".join(_code(_toml(a)) for a in args)
    elif origin in (list, tuple, set, frozenset):
        name = f"list of {_type_name(args[0])}" if args else "list"
    elif origin is dict:
        name = f"table of {_type_name(args[0])} → {_type_name(args[1])}" if args else "table"
    elif origin in (Union, types.UnionType):
        name = " or ".join(_type_name(a) for a in args)
    elif inner is SecretStr:
        name = "string (secret)"
    elif isinstance(inner, type) and issubclass(inner, PurePath):
        name = "path"
    elif isinstance(inner, type) and issubclass(inner, Enum):
        name = " \\| ".join(_code(_toml(m.value)) for m in inner)
    else:
        name = {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
            inner, getattr(inner, "__name__", str(inner))
        )
    return f"{name}, optional" if optional else name


_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥"))


def _bounds(field: Any) -> str:
    """The field's numeric constraints, as ``≥ 1, ≤ 28``."""
    found = []
    for item in field.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                found.append(f"{sign} {_number(value)}")
    return ", ".join(found)


def _number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if abs(value) >= 1 or value == 0 else repr(value)
    if isinstance(value, float):
        text = repr(value)
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", text).replace("e+", "e")
    return str(value)


def _toml(value: Any) -> str:
    """A default value as it would be written in nightowl.toml."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, SecretStr):
        return '"…"'
    if isinstance(value, PurePath):
        return _toml(str(value))
    if isinstance(value, Enum):
        return _toml(value.value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, BaseModel):
        return _toml(value.model_dump())
    return repr(value)


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml(key)


def _default(field: Any) -> tuple[Any, bool]:
    """(the field's default, whether it has one)."""
    if field.default_factory is not None:
        try:
            return field.default_factory(), True
        except TypeError:  # a factory that wants the validated data
            return None, False
    if field.default is PydanticUndefined:
        return None, False
    return field.default, True


def _settings_module() -> types.ModuleType:
    from nightowl.flows import settings

    return settings


#: Defaults longer than this go below the table, as a TOML block, not in the cell.
LONG_DEFAULT = 60


def _section(
    model: type[BaseModel],
    toml_path: list[str],
    env_path: list[str],
    *,
    prefix: str,
    nested: str,
    level: int,
    missing: list[str],
    skip: frozenset[str] = frozenset(),
) -> Iterator[str]:
    """The Markdown of one settings section (and of its nested sections, after it)."""
    title = ".".join(toml_path)
    heading = "#" * level
    yield f"{heading} `[{title}]`" if toml_path else f"{heading} Top level"
    yield ""
    doc = _prose(model.__doc__) if model.__doc__ and model.__doc__ != BaseModel.__doc__ else ""
    if doc:
        yield doc
        yield ""
    env_note = nested.join(env_path) if env_path else ""
    rows, long_defaults, children = [], [], []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        annotation, _ = _unwrap_optional(field.annotation)
        if _is_model(annotation):
            children.append((name, annotation))
            continue
        if get_origin(annotation) is dict and _is_model(get_args(annotation)[1]):
            children.append((name, annotation))
            continue
        key = _code(name)
        kind = _type_name(field.annotation)
        bounds = _bounds(field)
        if bounds:
            kind += f" ({bounds})"
        value, has_default = _default(field)
        if not has_default:
            default = "required"
        elif value is None:
            default = "unset"
        else:
            written = _toml(value)
            if len(written) > LONG_DEFAULT:
                default = "see below"
                long_defaults.append((name, value))
            else:
                default = _code(written)
        env_name = prefix + (env_note + nested if env_note else "") + name.upper()
        env = _code(env_name)
        if get_origin(annotation) in (list, tuple, set, dict):
            env += " (JSON)"
        description = " ".join((field.description or "").split())
        if not field.description:
            missing.append(f"{title + '.' if title else ''}{name}")
        rows.append((key, kind, default, env, _escape(description) if description else "—"))
    if rows:
        yield "| key | type | default | environment variable | description |"
        yield "|---|---|---|---|---|"
        for row in rows:
            yield "| " + " | ".join(_cell(c) for c in row) + " |"
        yield ""
    for name, value in long_defaults:
        yield f"Default of `{name}`:"
        yield ""
        yield "```toml"
        yield from _toml_table([*toml_path, name], value)
        yield "```"
        yield ""
    for name, annotation in children:
        if get_origin(annotation) is dict:  # a table of sections keyed by name (sources)
            yield from _keyed_sections(
                name,
                get_args(annotation)[1],
                toml_path,
                env_path,
                prefix=prefix,
                nested=nested,
                level=level,
                missing=missing,
                field=model.model_fields[name],
            )
        else:
            yield from _section(
                annotation,
                [*toml_path, name],
                [*env_path, name.upper()],
                prefix=prefix,
                nested=nested,
                level=level + (1 if toml_path else 0),
                missing=missing,
            )


def _toml_table(path: list[str], value: Any) -> Iterator[str]:
    """A long default as a TOML table: one key a line."""
    if isinstance(value, dict):
        yield "[" + ".".join(path) + "]"
        for key, item in value.items():
            yield f"{_toml_key(key)} = {_toml(item)}"
    else:
        yield f"{path[-1]} = {_toml(value)}"


def _keyed_sections(
    name: str,
    model: type[BaseModel],
    toml_path: list[str],
    env_path: list[str],
    *,
    prefix: str,
    nested: str,
    level: int,
    missing: list[str],
    field: Any,
) -> Iterator[str]:
    """``[name.<key>]`` sections of one model (``[sources.events]`` …)."""
    keys: tuple[str, ...] = ()
    if name == "sources":
        from nightowl.schemas.landing import SOURCES

        keys = tuple(SOURCES)
    placeholder = "<source>" if name == "sources" else "<name>"
    yield from _section(
        model,
        [*toml_path, f"{name}.{placeholder}"],
        [*env_path, f"{name.upper()}{nested}{placeholder.upper()}"],
        prefix=prefix,
        nested=nested,
        level=level + (1 if toml_path else 0),
        missing=missing,
    )
    if keys:
        listed = ", ".join(_code(k) for k in keys)
        yield (
            f"`{placeholder}` is one of {listed}; each has its own section "
            f"(`[{name}.{keys[0]}]`, environment variables "
            f"`{prefix}{name.upper()}{nested}{keys[0].upper()}{nested}…`), and a source "
            "left out of the file gets these defaults."
        )
        yield ""


def configuration_page() -> tuple[str, list[str]]:
    """The configuration reference, and the settings (dotted) that have no description."""
    settings = _settings_module()
    root = settings.Settings
    config = root.model_config
    prefix = str(config.get("env_prefix") or "")
    nested = str(config.get("env_nested_delimiter") or "")
    config_name = getattr(settings, "CONFIG_NAME", "nightowl.toml")
    missing: list[str] = []
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated at build time by docs/gen_reference.py from the settings models: "
        "edit the models' descriptions, not this page. -->",
        "",
        "Every setting nightowl reads, generated from the settings models (the root object is "
        f"`{root.__module__}.{root.__name__}`, built at the entry point). Settings come from "
        f"`{config_name}` in the current folder (or `--config FILE`), overridden by "
        "environment variables, overridden by command-line options. How to write the file, "
        "with examples, is in [Configuration](../operations/configuration.md).",
        "",
        _prose((settings.__doc__ or "").partition("\n\n")[2]),
        "",
    ]
    if prefix:
        example = f"{prefix}MODEL{nested}HORIZON_DAYS" if nested else f"{prefix}TIMEZONE"
        lines += [
            "## Environment variables",
            "",
            f"Every setting has an environment variable: `{prefix}` and the setting's path in "
            f"capitals, sections joined by `{nested}` (`[model] horizon_days` is "
            f"`{example}`). Lists and tables are given as JSON. A `{prefix}*` variable that "
            "names no setting is ignored with a warning naming the closest setting.",
            "",
        ]
        not_settings = sorted(getattr(settings, "NOT_SETTINGS", ()))
        if not_settings:
            names = ", ".join(_code(n) for n in not_settings)
            lines += [
                f"Not settings, and not warned about: {names} (test hooks, CI flags and the "
                "commands' `--debug`).",
                "",
            ]
    body = list(
        _section(
            root,
            [],
            [],
            prefix=prefix,
            nested=nested,
            level=2,
            missing=missing,
            skip=frozenset({"config_dir"}),  # set by nightowl: the config file's folder
        )
    )
    # The top-level table first, then one section per nested model, in the order of the model.
    lines += body
    return "\n".join(_tidy(lines)) + "\n", missing


def _tidy(lines: list[str]) -> list[str]:
    """No runs of blank lines."""
    out: list[str] = []
    for line in "\n".join(lines).split("\n"):
        if line == "" and out and out[-1] == "":
            continue
        out.append(line)
    return out


# --------------------------------------------------------------------------- commands

#: Rich markup styles the help texts use; anything else in brackets is text ([schedule] …).
_MARKUP = re.compile(
    r"\[/?(?:bold|b|italic|i|dim|underline|u|red|green|yellow|blue|cyan|magenta|white)\]|\[/\]"
)
_EXAMPLES = re.compile(r"^(Examples?):\s*(.*)$")
_TERM = re.compile(r"^\[bold\]([^\[]+)\[/\]:\s*(.*)$")
_COMMAND_WORDS = ("nightowl", "duckdb", "python", "prefect", ".venv/", "make ")


def _help_markdown(text: str) -> str:
    """A command's help (Typer rich markup) as Markdown: paragraphs, terms, example blocks."""
    out: list[str] = []
    for block in inspect.cleandoc(text).split("\n\n"):
        raw_lines = block.split("\n")
        first = _MARKUP.sub("", raw_lines[0]).strip()
        example = _EXAMPLES.match(first)
        if example:
            out.append(f"**{example.group(1)}**")
            out.append("")
            commands = [example.group(2)] if example.group(2) else []
            commands += [line.strip() for line in raw_lines[1:] if line.strip()]
            out.append("```bash")
            for command in commands:
                command = _MARKUP.sub("", command)
                again = _EXAMPLES.match(command)  # "Example: …" on each line of the paragraph
                if again:
                    command = again.group(2)
                is_command = command.startswith(_COMMAND_WORDS)
                out.append(command if is_command else f"# {command}")
            out.append("```")
            out.append("")
            continue
        if any(_TERM.match(line) for line in raw_lines):
            out.extend(_terms(raw_lines))
            continue
        out.append(_escape(" ".join(_MARKUP.sub("", block).split())))
        out.append("")
    return "\n".join(out).strip() + "\n"


def _terms(lines: list[str]) -> Iterator[str]:
    """Lines of ``[bold]term[/]: text`` as a list; a sentence after the last one, a paragraph."""
    items: list[list[str]] = []
    tail: list[str] = []
    for line in lines:
        term = _TERM.match(line)
        if term:
            items.append([f"**{term.group(1).strip()}**: ", term.group(2)])
        elif tail or (items and items[-1][-1].rstrip().endswith(".") and line[:1].isupper()):
            tail.append(line)
        elif items:
            items[-1].append(line)
        else:
            tail.append(line)
    for item in items:
        head, *rest = item
        yield "- " + head + _escape(" ".join(" ".join(rest).split()))
    yield ""
    if tail:
        yield _escape(" ".join(_MARKUP.sub("", " ".join(tail)).split()))
        yield ""


def _usage(path: list[str], command: Any, ctx: Any) -> str:
    pieces = [" ".join(path)]
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    if any(p.param_type_name == "option" for p in params):
        pieces.append("[OPTIONS]")
    for param in params:
        if param.param_type_name != "argument":
            continue
        name = (param.metavar or param.name or "").upper()
        if param.nargs == -1:
            name += "..."
        pieces.append(name if param.required else f"[{name}]")
    if hasattr(command, "list_commands"):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _param_type(param: Any, ctx: Any) -> str:
    shown = param.display_type(ctx) if hasattr(param, "display_type") else ""
    shown = str(shown).strip("<>")
    shown = shown.replace(" range", "")
    shown = {"str": "text", "int": "integer", "float": "number", "bool": "flag"}.get(shown, shown)
    if shown.startswith("list[") or getattr(param, "multiple", False):
        inner = shown.removeprefix("list[").removesuffix("]")
        inner = {"str": "text", "int": "integer", "float": "number"}.get(inner, inner)
        shown = f"{inner}, repeatable"
    if "|" in shown:
        shown = " \\| ".join(_code(choice) for choice in shown.split("|"))
    bounds = []
    if getattr(param, "min", None) is not None:
        bounds.append(f"≥ {_number(param.min)}")
    if getattr(param, "max", None) is not None:
        bounds.append(f"≤ {_number(param.max)}")
    if bounds:
        shown += f" ({', '.join(bounds)})"
    return shown


def _param_default(param: Any) -> str:
    if param.required:
        return "required"
    value = param.default
    if getattr(param, "is_flag", False) and isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == ():
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(_code(str(v)) for v in value)
    return _code(str(value))


def _param_names(param: Any) -> str:
    if param.param_type_name == "argument":
        return _code((param.metavar or param.name or "").upper())
    names = sorted(param.opts, key=lambda o: (not o.startswith("--"), o))
    names += list(param.secondary_opts)
    metavar = getattr(param, "metavar", None)
    if metavar:
        names[0] = f"{names[0]} {metavar}"
    return ", ".join(_code(n) for n in names)


def _param_help(param: Any) -> str:
    text = _escape(" ".join((getattr(param, "help", None) or "").split())) or "—"
    envvar = getattr(param, "envvar", None)
    if envvar:
        names = [envvar] if isinstance(envvar, str) else list(envvar)
        text += " Environment variable: " + ", ".join(_code(n) for n in names) + "."
    return text


def _options_table(command: Any, ctx: Any) -> Iterator[str]:
    params = [
        p for p in command.get_params(ctx) if not getattr(p, "hidden", False) and p.name != "help"
    ]
    if not params:
        return
    yield "| option | type | default | description |"
    yield "|---|---|---|---|"
    for param in params:
        cells = (_param_names(param), _param_type(param, ctx), _param_default(param))
        yield "| " + " | ".join(_cell(c) for c in (*cells, _param_help(param))) + " |"
    yield ""


def _walk(command: Any, ctx: Any, path: list[str]) -> Iterator[tuple[list[str], Any, Any]]:
    """Every (path, command, context) under ``command``, groups before their commands."""
    if not hasattr(command, "list_commands"):
        return
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or getattr(sub, "hidden", False):
            continue
        sub_ctx = type(ctx)(sub, info_name=name, parent=ctx)
        yield [*path, name], sub, sub_ctx
        yield from _walk(sub, sub_ctx, [*path, name])


def _anchor(path: list[str]) -> str:
    return "-".join(path[1:]) or path[0]


def commands_page() -> tuple[str, list[str]]:
    """The commands reference, and the commands (paths) it lists."""
    import typer

    from nightowl.cli import app

    root = typer.main.get_command(app)
    name = root.name or "nightowl"
    ctx = root.context_class(root, info_name=name)  # typer's own click: no import of click
    walked = list(_walk(root, ctx, [name]))
    lines = [
        "# Command reference",
        "",
        "<!-- Generated at build time by docs/gen_reference.py from the typer app "
        "nightowl.cli:app: edit the commands' help, not this page. -->",
        "",
        _escape(" ".join((root.help or "").split())),
        "",
        "Every command prints this with `--help`. All of them read `nightowl.toml` in the "
        "current folder unless given `--config FILE`, and `--data-root DIR` overrides the "
        "data root (see the [configuration reference](configuration.md)).",
        "",
        "| command | does |",
        "|---|---|",
    ]
    for path, command, _ in walked:
        short = command.get_short_help_str(limit=10_000) if command.help else ""
        link = f"[`{' '.join(path)}`](#{_anchor(path)})"
        lines.append(f"| {link} | {_cell(_escape(_MARKUP.sub('', short)))} |")
    lines += ["", "## Global options", ""]
    lines.append("```text")
    lines.append(_usage([name], root, ctx))
    lines.append("```")
    lines.append("")
    lines += list(_options_table(root, ctx))
    for path, command, sub_ctx in walked:
        level = "#" * min(2 + len(path) - 2, 4)
        lines += [f"{level} {' '.join(path)} {{#{_anchor(path)}}}", ""]
        lines += ["```text", _usage(path, command, sub_ctx), "```", ""]
        if command.help:
            lines.append(_help_markdown(command.help))
        lines += list(_options_table(command, sub_ctx))
    return "\n".join(_tidy(lines)) + "\n", [" ".join(p) for p, _, _ in walked]


# --------------------------------------------------------------------------- tables


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower()


def _columns_table(table: Any) -> Iterator[str]:
    named = {n.column: n for n in table.named_by}
    yield "| column | dtype |"
    yield "|---|---|"
    for column, dtype in table.schema.items():
        shown = _code(named[column].shown) if column in named else _code(column)
        if column in named:
            shown += f" ({_escape(named[column].setting)}; {_code(column)} by default)"
        yield f"| {_cell(shown)} | {_code(str(dtype))} |"
    yield ""


def tables_page() -> tuple[str, list[str]]:
    """The table reference, and the tables (``layer/name``) it lists."""
    import nightowl.tasks.behaviour.units  # noqa: F401  (declares the columns of features/user)
    from nightowl.warehouse import tables as registry

    everything = list(registry.TABLES.values())
    lines = [
        "# Table reference",
        "",
        "<!-- Generated at build time by docs/gen_reference.py from the table registry "
        "nightowl/warehouse/tables.py: edit the registry, not this page. -->",
        "",
        "Every table nightowl writes, as `nightowl/warehouse/tables.py` declares it. A "
        "partition lives in `<data root>/warehouse/<layer>/<table>/<key>=<value>/`; writing "
        "one that does not have exactly these columns, dtypes and order, or this partition key, "
        "or writing a table not declared here, is refused with a `TableContractError` naming "
        "the table, the column, what was expected and what came. Tables of the same columns "
        "(the quarantine of each source and stage) share a section. The views `nightowl "
        "query` reads them through are in [What comes out](../concepts/layers.md).",
        "",
        "| table | partitioned by | one row is |",
        "|---|---|---|",
    ]
    groups: list[list[Any]] = []
    for t in everything:
        same = groups and groups[-1][0].layer == t.layer and groups[-1][0].schema == t.schema
        if same and groups[-1][0].partition_key == t.partition_key and t.layer == "quarantine":
            groups[-1].append(t)
        else:
            groups.append([t])
    for group in groups:
        for t in group:
            link = f"[`{t.path}`](#{_slug(group[0].path)})"
            lines.append(f"| {link} | `{t.partition_key}` | {_cell(_escape(t.doc))} |")
    lines.append("")
    layer = None
    for group in groups:
        first = group[0]
        if first.layer != layer:
            layer = first.layer
            lines += [f"## {layer}", ""]
        title = first.path
        if len(group) > 1:  # source=events/stage=ingest, … as source=<source>/stage=<stage>
            title = re.sub(r"(source|stage)=[^/]+", r"\1=<\1>", first.path)
        lines += [f"### `{title}` {{#{_slug(first.path)}}}", ""]
        if len(group) == 1:
            lines += [_escape(first.doc[0].upper() + first.doc[1:]) + ".", ""]
        else:
            lines += [f"- `{t.path}`: {_escape(t.doc)}" for t in group] + [""]
        lines += [f"Partitioned by `{first.partition_key}`.", ""]
        lines += list(_columns_table(first))
    return "\n".join(_tidy(lines)) + "\n", [t.path for t in everything]


# --------------------------------------------------------------------------- entry points

PAGES = {
    "reference/configuration.md": configuration_page,
    "reference/commands.md": commands_page,
    "reference/tables.md": tables_page,
}


def _write_pages() -> None:
    import mkdocs_gen_files

    for path, make in PAGES.items():
        text, _ = make()
        with mkdocs_gen_files.open(path, "w") as out:
            out.write(text)
        mkdocs_gen_files.set_edit_path(path, "gen_reference.py")


if __name__ == "__main__":
    wanted = sys.argv[1:] or ["configuration", "commands", "tables"]
    for page in wanted:
        text, listed = PAGES[f"reference/{page}.md"]()
        print(text)
        label = {"configuration": "settings without a description", "tables": "tables"}.get(
            page, "commands"
        )
        print(f"<!-- {label}: {len(listed)}: {', '.join(listed)} -->", file=sys.stderr)
else:
    _write_pages()
