"""The notebooks as stored: no outputs, one tagged parameters cell, shopsense imported (no
kernel, no Spark; tests/integration/test_notebooks.py executes them)."""

import json

import pytest

from tests.helpers import NOTEBOOKS


@pytest.mark.parametrize("name", ["01_quickstart", "02_customers", "03_supply"])
def test_notebook_is_stored_without_outputs_and_has_a_parameters_cell(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1
    assert any("from shopsense" in "".join(c["source"]) for c in code)
