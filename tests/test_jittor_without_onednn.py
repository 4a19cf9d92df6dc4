"""The Jittor twin also runs with oneDNN off (``use_mkl=0``): a small r18vd eval
forward in a fresh process, compared with the reference on the same weights."""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, numpy as np, torch
from rtdetr_jittor._env import jt, backend_info
from parity.run import build_pair, make_batch
pair = build_pair("configs/rtdetr/rtdetr_r18vd_6x_coco.yml", {"RTDETRTransformer": {"num_queries": 50}})
images, _ = make_batch(0, 1, 96, 80)
pair.ref.model.eval(); pair.jt.model.eval()
with torch.no_grad():
    a = pair.ref.model(torch.from_numpy(images))
with jt.no_grad():
    b = pair.jt.model(jt.array(images))
print(json.dumps({"backend": backend_info(),
                  "logits": float(np.abs(a["pred_logits"].numpy() - b["pred_logits"].numpy()).max()),
                  "boxes": float(np.abs(a["pred_boxes"].numpy() - b["pred_boxes"].numpy()).max())}))
"""


@pytest.mark.parity
def test_jittor_runs_and_matches_with_onednn_off():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "use_mkl": "0", "PYTHONPATH": root}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"]["onednn"] is False
    # eval-mode float32 noise floor of the whole model (README: 3.3e-6 on logits at 320 px)
    assert result["logits"] < 1e-4 and result["boxes"] < 1e-4, result
