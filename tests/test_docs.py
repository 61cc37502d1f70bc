"""The docs keep up with the code: every setting is in docs/configuration.md, the module table of
docs/architecture.md is the tree, the README stays short, and no relative link is broken."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from mediagate.settings import KEY_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PACKAGE = ROOT / "mediagate"

# A field with no variable of its own: it is filled from every MEDIAGATE_KEY_<GROUP> the other
# fields do not declare (Settings._collect_group_keys), and documented as that pattern.
NOT_NAMED_BY_ITS_FIELD = {"extra_group_keys": KEY_PREFIX + "<GROUP>"}


def first_cells(markdown: str) -> list[str]:
    """The first cell of every table row whose first cell is code: | `this` | ... |."""
    return re.findall(r"^\|\s*`([^`]+)`\s*\|", markdown, flags=re.MULTILINE)


def section(markdown: str, heading: str) -> str:
    """The text under a `## heading`, up to the next heading of that level."""
    start = markdown.index(f"\n## {heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]


def env_names(name: str, field: FieldInfo) -> set[str]:
    """The environment variables pydantic-settings reads a field from."""
    if name in NOT_NAMED_BY_ITS_FIELD:
        return {NOT_NAMED_BY_ITS_FIELD[name]}
    alias = field.validation_alias or field.alias
    if alias is None:
        return {Settings.model_config.get("env_prefix", "") + name.upper()}
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    return {choice.upper() for choice in choices if isinstance(choice, str)}


def test_configuration_lists_every_setting_and_nothing_else() -> None:
    table = first_cells((DOCS / "configuration.md").read_text())
    documented = {cell for cell in table if cell.startswith("MEDIAGATE_")}
    settings = set().union(*(env_names(n, f) for n, f in Settings.model_fields.items()))
    missing, unknown = sorted(settings - documented), sorted(documented - settings)
    assert not missing, f"settings missing from docs/configuration.md: {missing}"
    assert not unknown, f"in docs/configuration.md, but not a setting: {unknown}"


def has_code(path: Path) -> bool:
    """Whether a module holds more than a docstring."""
    body = ast.parse(path.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


def modules_on_disk() -> set[str]:
    modules = set()
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(PACKAGE / "simulator"):
            modules.add("mediagate/simulator/")
        elif path.name != "__init__.py" or has_code(path):
            modules.add(path.relative_to(ROOT).as_posix())
    return modules


def test_architecture_module_table_is_the_tree() -> None:
    table = set(first_cells(section((DOCS / "architecture.md").read_text(), "Module table")))
    on_disk = modules_on_disk()
    missing, gone = sorted(on_disk - table), sorted(table - on_disk)
    assert not (missing or gone), f"not in the table: {missing}; not on disk: {gone}"


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 220


def test_relative_links_point_at_files() -> None:
    broken = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#")[0]
            if not path or re.match(r"^[a-z][a-z0-9+.-]*:", path):
                continue  # an anchor on the same page, or an absolute URL
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []
