"""The suite's notebook files and their ``parameters`` cells (no notebook is executed here).

:func:`notebook_parameters` reads the defaults of a notebook's ``parameters`` cell from its JSON, and
:func:`notebook_parameter_types` reads the cell through papermill's ``inspect_notebook`` (papermill is imported
only when it is called); :func:`notebook_path` finds a
suite notebook by name, and :func:`injected_parameter_names` tells, inside a kernel, which names papermill
injected. :mod:`ballot_lib.sweep` runs the notebooks; :mod:`ballot_lib.validation` checks their parameters;
:mod:`ballot_lib.analysis` reads a running notebook's parameters: all three use this module.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any, Mapping

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks of the suite, in reading order."""
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no notebooks named NN_*.ipynb in {folder}")
    return found


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The parameters declared in a notebook's ``parameters`` cell, with their defaults.

    Read from the notebook's JSON with :mod:`ast` (no papermill or nbformat needed, so a GPU machine's bare
    Python can plan a parameter file); a default that is not a literal is kept as its source text, as papermill's
    ``inspect_notebook`` reports it, and a notebook without a cell tagged ``parameters`` declares none
    (``tests/test_cost.py`` checks both agree on every notebook).
    """
    import json

    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if c.get("cell_type") == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:  # as papermill: no parameters cell, no parameters
        return {}
    source = tagged[0]["source"]
    source = "".join(source) if isinstance(source, list) else source
    out: dict[str, Any] = {}
    for node in ast.parse(source).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if not isinstance(node, (ast.Assign, ast.AnnAssign)) or not isinstance(target, ast.Name) or node.value is None:
            continue
        try:
            out[target.id] = ast.literal_eval(node.value)
        except (ValueError, SyntaxError):
            out[target.id] = ast.get_source_segment(source, node.value)
    return out


def notebook_path(notebook: str | os.PathLike) -> Path:
    """A notebook of the suite by file name (``"00_quickstart.ipynb"``, ``.ipynb`` optional) or by path."""
    p = Path(notebook)
    if p.suffix != ".ipynb":
        p = p.with_name(p.name + ".ipynb")
    if p.is_file():
        return p
    if (NOTEBOOKS / p.name).is_file():
        return NOTEBOOKS / p.name
    raise FileNotFoundError(f"notebook {notebook} not found (looked for {p} and {NOTEBOOKS / p.name})")


def notebook_parameter_types(notebook: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """papermill's description of a notebook's ``parameters`` cell: name -> {inferred_type_name, default, help}."""
    import papermill

    return dict(papermill.inspect_notebook(str(notebook_path(notebook))))


def injected_parameter_names(namespace: Mapping[str, Any]) -> set[str]:
    """Names assigned by the parameters papermill injected into this kernel (its ``# Parameters`` cell, found in
    IPython's input history ``In``); empty outside a papermill run."""
    history = namespace.get("In")
    if not isinstance(history, list):
        return set()
    for source in reversed(history):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return set()
            return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                    if isinstance(t, ast.Name)}
    return set()
