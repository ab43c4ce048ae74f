"""notebooks/kaggle_train.ipynb runs top to bottom on a CPU with the synthetic set
(CODEXT_NOTEBOOK_SMOKE=1: a tiny model, two CPU workers through codext.launch)."""
import glob
import math
import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

import codext  # noqa: E402

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "kaggle_train.ipynb")


@pytest.mark.timeout(180)
def test_kaggle_notebook_runs_and_shows_figures_and_metrics(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    out = tmp_path / "out"
    monkeypatch.setenv("CODEXT_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("CODEXT_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # the kernel imports the codext these tests import
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(codext.__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
    client = nbclient.NotebookClient(nb, timeout=150, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 2, "the curves and the prediction grid"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    values = dict(re.findall(r"^\s*(sm|wfm|mean_em|mae|iou|dice): (\S+)$", text, re.M))
    assert set(values) == {"sm", "wfm", "mean_em", "mae", "iou", "dice"}, text
    assert all(math.isfinite(float(v)) and 0 <= float(v) <= 1 for v in values.values())
    assert "dataset: synthetic" in text
    masks = glob.glob(str(out / "masks" / "*.png"))
    assert len(masks) == 4
    assert os.path.exists(out / "checkpoints" / "best.safetensors")
