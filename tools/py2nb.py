"""Convert a percent-format script (``# %%`` code cells, ``# %% [markdown]`` cells) into a clean notebook.

Used to author the notebooks; the committed ``.ipynb`` files are the source of truth. A cell whose first line is
``# parameters`` is tagged ``parameters`` for papermill. Usage: python tools/py2nb.py src.py out.ipynb
"""
import sys

import nbformat


def convert(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    chunks = text.split("# %%")
    for chunk in chunks[1:]:
        header, _, body = chunk.partition("\n")
        body = body.strip("\n")
        if header.strip() == "[markdown]":
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in body.splitlines()]
            nb.cells.append(nbformat.v4.new_markdown_cell("\n".join(lines)))
        else:
            cell = nbformat.v4.new_code_cell(body)
            if body.startswith("# parameters"):
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


if __name__ == "__main__":
    src, out = sys.argv[1], sys.argv[2]
    nbformat.write(convert(open(src).read()), out)
