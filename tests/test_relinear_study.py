import csv
import os

from examples_util import load_example

study = load_example("relinear_study")


def test_quick_mode_writes_csv_and_plots(tmp_path):
    out = str(tmp_path / "study")
    rows = study.main(["--quick", "--output-dir", out])
    with open(os.path.join(out, "runs.csv")) as f:
        saved = list(csv.DictReader(f))
    assert len(saved) == len(rows) == 13
    assert {r["variant"] for r in saved} == set(study.VARIANTS)
    assert {r["study"] for r in saved} == {"collapse", "gamma",
                                           "regularizer"}
    for name in ("collapse.png", "transition.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(4) == b"\x89PNG"
    by_gamma = {r["gamma"]: r for r in rows if r["study"] == "gamma"}
    # gamma 0 keeps the network conventional; gamma 1 moves away from it
    assert by_gamma[0.0]["relinear_gate"] == 0.0
    assert by_gamma[0.0]["relinear_square"] == 0.0
    assert by_gamma[1.0]["relinear_gate"] > by_gamma[0.01]["relinear_gate"] > 0
