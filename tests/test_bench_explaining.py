"""The bench's explain timing covers one row and a batch, and says which method explained them."""

from sklearn.datasets import load_breast_cancer

from bench import explaining


def test_explain_and_predict_are_timed_per_row_for_one_row_and_a_batch(demo_root):
    X = load_breast_cancer(as_frame=True).data
    costs = explaining.measure_all(demo_root, {"breast-cancer": X}, budget=0.001)
    assert [(c["model"], c["rows"], c["method"]) for c in costs] == [("breast-cancer", 1, "linear"),
                                                                      ("breast-cancer", explaining.BATCH, "linear")]
    for cost in costs:
        assert cost["predict_ms_per_row"] > 0 and cost["explain_ms_per_row"] > 0
        assert cost["ratio"] == cost["explain_ms_per_row"] / cost["predict_ms_per_row"]
