"""Write docs/configuration.md from the config dataclasses' field docstrings.

    python scripts/config_reference.py            # rewrite docs/configuration.md
    python scripts/config_reference.py --check    # exit 1 when it is out of date (the tests)

Every key a user can set (``rec train KEY=VALUE``, ``rec analyze task=NAME task.KEY=VALUE``)
is a field of one of these dataclasses, so the reference cannot drift from what the code
accepts: a new field without a docstring shows up as an empty cell here.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rec.analysis.run import TASKS  # noqa: E402
from rec.run_config import RunConfig  # noqa: E402

OUT = REPO / "docs" / "configuration.md"
# RunConfig's fields are the config tree's groups; model.K is the top-level K.
TOP_LEVEL = {"model.K": "K"}

HEADER = """# Configuration reference

Generated from the config dataclasses' docstrings by `python scripts/config_reference.py`
(a test fails when this page is out of date). Set any key on the command line,
`rec train model=embeddings K=20 train.max_epochs=50 split=temporal`, or pick a group's
file with `GROUP=NAME` (`conf/GROUP/NAME.yaml`). An unknown key or a value of the wrong
type is refused with the list of what is accepted; no key is silently ignored.
"""


def field_docs(cls) -> dict[str, str]:
    """The string literal under each annotated field of ``cls``'s body (PEP 257 style)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def default_of(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (dict, list, tuple)) and not value:
        return "`{}`" if isinstance(value, dict) else "`[]`"
    return f"`{value}`"


def type_of(f: dataclasses.Field) -> str:
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return text.replace("|", "or")


def rows(cls, prefix: str) -> list[str]:
    docs = field_docs(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(f.type) or (f.default_factory is not dataclasses.MISSING
                                                and dataclasses.is_dataclass(f.default_factory)):
            continue  # a group: its own table
        doc = docs.get(f.name, "").replace("|", "\\|")
        out.append(f"| `{TOP_LEVEL.get(key, key)}` | {type_of(f)} | {default_of(f)} | {doc} |")
    return out


def table(title: str, cls, prefix: str) -> str:
    doc = " ".join(inspect.cleandoc(cls.__doc__ or "").split())
    head = f"## {title}\n\n{doc}\n\n| key | type | default | meaning |\n|---|---|---|---|"
    return "\n".join([head, *rows(cls, prefix)])


def render() -> str:
    parts = [HEADER, table("Run (top level)", RunConfig, "")]
    for f in dataclasses.fields(RunConfig):
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            parts.append(table(f"`{f.name}`", f.default_factory, f"{f.name}."))
    parts.append("# Analyses\n\n`rec analyze task=NAME` (or `python analyze.py task=NAME`) reads "
                 "the run above's published model; each task's options are `task.KEY=VALUE`.")
    for name, task in TASKS.items():
        parts.append(table(f"`task={name}`", task.Options, "task."))
    return "\n\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when the page is stale")
    text = render()
    if parser.parse_args().check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(REPO)} is out of date: run python scripts/config_reference.py")
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
