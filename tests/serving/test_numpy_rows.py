"""A numpy float matrix of each demo model's own data, sent as rows, records and columns, is served."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

from service.protocols import v1
from service.serving import inference
from service.serving.catalog import Catalog
from service.serving.inference import Limits, Target

DATASETS = {"breast-cancer": lambda: load_breast_cancer(as_frame=True).data,
            "diabetes": lambda: load_diabetes(as_frame=True, scaled=False).data}


@pytest.fixture(scope="module")
def catalog(demo_root):
    catalog = Catalog(demo_root)
    catalog.refresh()
    return catalog


def bodies(frame):
    floats = frame.to_numpy(dtype=np.float64)  # what json.dumps(matrix.tolist()) sends: 2.0, not 2
    names = list(frame.columns)
    return {"rows": {"instances": floats[:50].tolist()},
            "records": {"instances": [dict(zip(names, row, strict=True)) for row in floats[:50].tolist()]},
            "columns": {"inputs": {name: floats[:50, i].tolist() for i, name in enumerate(names)}}}


@pytest.mark.parametrize("model", sorted(DATASETS))
@pytest.mark.parametrize("layout", ["rows", "records", "columns"])
@pytest.mark.parametrize("vectorized_min_rows", [10**9, 1])
def test_a_float_matrix_gets_the_models_own_predictions(catalog, model, layout, vectorized_min_rows):
    frame = DATASETS[model]()
    limits = Limits(max_rows=1000, vectorized_min_rows=vectorized_min_rows)
    request = v1.decode(bodies(frame)[layout], Target(model), max_rows=1000)
    answer = inference.predict(catalog, request, limits)
    expected = answer.model.estimator.predict(frame.head(50).astype(answer.model.frame(answer.batch.columns).dtypes))
    assert answer.batch.n_rows == 50
    np.testing.assert_allclose(answer.result.predictions, expected, rtol=1e-12)
    if model == "diabetes":
        assert answer.batch.columns["sex"].tolist() == frame["sex"].head(50).astype(int).tolist()
