"""Where the column-wise validation path starts to beat the per-row one: ``python -m bench.validation_switch``.

Times ``validate_rows`` on both paths for each demo model's own rows, at batch sizes around the
switch point, and prints microseconds per request. ``VECTORIZED_MIN_ROWS`` (service/config.py)
is chosen from this table: the smallest size from which column-wise wins on every model.
"""

from __future__ import annotations

import tempfile
import timeit
from pathlib import Path

from sklearn.datasets import load_breast_cancer, load_diabetes

from service.models import artifacts
from service.models.demo import train_demo
from service.protocols import v1
from service.serving.inference import Target
from service.serving.validation import validate_rows

SIZES = (1, 2, 3, 4, 8, 16, 63, 128)
PATHS = {"per row": 10**9, "column-wise": 1}  # vectorized_min_rows forcing each path


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "artifacts"
        train_demo(root)
        data = {"breast-cancer": load_breast_cancer(as_frame=True).data,
                "diabetes": load_diabetes(as_frame=True, scaled=False).data}
        print(f"{'model':<15} {'path':<12}" + "".join(f"{n:>9}" for n in SIZES) + "   (us per request)")
        for name, frame in data.items():
            features = artifacts.read_manifest(artifacts.version_dir(root, name, 1))["input"]["features"]
            for label, switch in PATHS.items():
                cells = []
                for n in SIZES:
                    request = v1.decode({"instances": frame.head(n).to_numpy().tolist()}, Target(name), max_rows=10**5)

                    def once(request=request, switch=switch, features=features) -> None:
                        validate_rows(request.layout, request.data, features, vectorized_min_rows=switch)

                    number = max(5, 2000 // n)
                    cells.append(min(timeit.repeat(once, number=number, repeat=3)) / number * 1e6)
                print(f"{name:<15} {label:<12}" + "".join(f"{c:>9.0f}" for c in cells))


if __name__ == "__main__":
    main()
