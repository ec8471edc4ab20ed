"""notebooks/quickstart.ipynb runs top to bottom on the CPU (nbclient), and does what it says:
the PM's loss is printed for its steps and the PPO updates report their metrics."""
import os

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes():
  path = os.path.join(REPO, "notebooks", "quickstart.ipynb")
  nb = nbformat.read(path, as_version=4)
  env_flags = os.environ.get("XLA_FLAGS", "")
  os.environ["XLA_FLAGS"] = ""  # the kernel is a new process: one CPU device, as a user has
  try:
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": REPO}}).execute()
  finally:
    os.environ["XLA_FLAGS"] = env_flags
  text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
  assert "'loss'" in text and "'accuracy'" in text
  assert "objective/scores" in text and "policy/approxkl_avg" in text
  assert "Traceback" not in text
