"""Serving limits the threads of models' native code (OpenMP, BLAS) to ``model_threads``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# In a fresh interpreter: the limit is process-wide and must not leak into other tests.
PROBE = """
import json, os
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier  # loads scikit-learn's OpenMP
from driftline.serving.model_source import limit_model_threads
from threadpoolctl import threadpool_info

before = {i["internal_api"]: i["num_threads"] for i in threadpool_info()}
after = limit_model_threads(1)
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 3))
model = HistGradientBoostingClassifier(max_iter=5).fit(x, x[:, 0] > 0)
print(json.dumps({
    "before": before,
    "after": after,
    "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    "predicted": int(model.predict(x[:4]).size),
}))
"""


def test_native_thread_pools_are_limited_for_loaded_and_later_libraries() -> None:
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["before"]["openmp"] == 2  # the probe starts from two threads
    assert report["after"] and set(report["after"].values()) == {1}
    # Libraries loaded after the call (LightGBM's, XGBoost's OpenMP) read these.
    assert report["env"] == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    assert report["predicted"] == 4
