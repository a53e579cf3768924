"""Prompt templates: markdown files with YAML front matter (`templates/**/*.md`).

Front matter: `name`, `description`, `category` (a style category, or `rewriter`), and
optionally `thinking_content`, `assistant_content`, `add_think_block` and `output` (`json` for
rewriters whose answer carries a ```json block with `revised_prompt`). The body is the system
prompt. A malformed file is reported with its line and skipped; the others still load.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
REWRITER = "rewriter"
FIELDS = {"name", "description", "category", "thinking_content", "assistant_content", "add_think_block", "output"}


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    category: str
    system_prompt: str
    thinking_content: str = ""
    assistant_content: str = ""
    add_think_block: bool = False
    output: str = "text"  # "text" or "json"
    path: str = ""


def parse_template(text: str, path: str = "<text>") -> Template:
    """One template from its file text; a ValueError names the file and the line at fault."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise ValueError(f"{path}:1: a template starts with a '---' line opening its YAML front matter.")
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    except StopIteration:
        raise ValueError(f"{path}: the front matter opened on line 1 is never closed with '---'.") from None
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1  # +1 for the opening '---', +1 for 1-based
        raise ValueError(f"{path}:{line}: invalid YAML front matter: {getattr(err, 'problem', err)}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}:2: the front matter must be a mapping of `key: value` lines.")
    unknown = sorted(set(meta) - FIELDS)
    if unknown:
        raise ValueError(f"{path}: unknown front-matter key(s) {unknown}: use {sorted(FIELDS)}.")
    for key in ("name", "category"):
        if not str(meta.get(key) or "").strip():
            raise ValueError(f"{path}: the front matter needs a `{key}`.")
    if meta.get("output", "text") not in ("text", "json"):
        raise ValueError(f"{path}: output={meta['output']!r} must be 'text' or 'json'.")
    return Template(
        name=str(meta["name"]).strip(), description=str(meta.get("description") or ""),
        category=str(meta["category"]).strip(), system_prompt="\n".join(lines[end + 1:]).strip(),
        thinking_content=str(meta.get("thinking_content") or ""),
        assistant_content=str(meta.get("assistant_content") or ""),
        add_think_block=bool(meta.get("add_think_block", False)), output=meta.get("output", "text"),
        path=path,
    )


def load_templates(folder: Path = TEMPLATES_DIR) -> tuple[dict[str, Template], list[str]]:
    """All templates under `folder` by name, and one message per file that could not be used."""
    templates, errors = {}, []
    for path in sorted(Path(folder).rglob("*.md")):
        try:
            template = parse_template(path.read_text(encoding="utf-8"), str(path))
        except (ValueError, UnicodeDecodeError) as err:
            errors.append(str(err))
            continue
        if template.name in templates:
            errors.append(f"{path}: duplicate template name {template.name!r} (also in {templates[template.name].path}).")
            continue
        templates[template.name] = template
    return templates, errors


@functools.lru_cache(maxsize=1)
def shipped() -> tuple[dict[str, Template], tuple[str, ...]]:
    """The templates shipped in `templates/`, loaded once."""
    templates, errors = load_templates()
    return templates, tuple(errors)


def get_template(name: str, category: str | None = None) -> Template:
    """A shipped template by name; `category="rewriter"` / `"style"` restricts the kind."""
    templates, _ = shipped()
    choices = names(category)
    if name not in choices:
        kind = {"rewriter": "rewriter", "style": "style"}.get(category, "")
        raise ValueError(f"template={name!r} is not a known {kind} template: use one of {', '.join(choices)}.")
    return templates[name]


def names(category: str | None = None) -> list[str]:
    """Template names: all, only rewriters (`"rewriter"`), or only style templates (`"style"`)."""
    templates, _ = shipped()
    if category == "style":
        return [n for n, t in templates.items() if t.category != REWRITER]
    if category:
        return [n for n, t in templates.items() if t.category == category]
    return list(templates)
