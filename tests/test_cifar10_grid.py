"""benchmarks/cifar10_grid.py (the results grid) and the data it takes: an
npz cut into parts with a SHA-256, joined and checked; the augmentation on
the device; one tiny run end to end."""

import json
import re
import os
import sys

import keras
import numpy as np
import pytest
from conftest import to_numpy

from examples_util import ROOT

import keras_quadratic as kq

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import cifar10_grid  # noqa: E402
from common import load_npz  # noqa: E402
from make_cifar_subset import write_parts  # noqa: E402


def _npz(path, train=40, test=20):
    rng = np.random.default_rng(0)
    arrays = dict(
        x_train=rng.integers(0, 256, (train, 32, 32, 3), dtype="uint8"),
        y_train=rng.integers(0, 10, train).astype("uint8"),
        x_test=rng.integers(0, 256, (test, 32, 32, 3), dtype="uint8"),
        y_test=rng.integers(0, 10, test).astype("uint8"))
    np.savez(path, **arrays)
    return arrays


def test_parts_join_into_the_same_file_and_a_bad_part_is_refused(tmp_path):
    path = str(tmp_path / "data.npz")
    arrays = _npz(path)
    whole = open(path, "rb").read()
    write_parts(path, 20_000)  # then fewer, larger parts: none left over
    write_parts(path, 50_000)
    count = -(-len(whole) // 50_000)
    assert count > 1 and os.path.exists(f"{path}.part{count - 1}")
    assert not os.path.exists(f"{path}.part{count}")
    os.remove(path)
    loaded = load_npz(path)
    assert open(path, "rb").read() == whole
    for got, key in zip(loaded, ("x_train", "y_train", "x_test", "y_test")):
        np.testing.assert_array_equal(got, arrays[key])
    # a damaged part: refused, and nothing joined
    os.remove(path)
    with open(path + ".part1", "r+b") as f:
        f.write(b"x")
    with pytest.raises(SystemExit, match="SHA-256"):
        load_npz(path)
    assert not os.path.exists(path)
    os.remove(path + ".sha256")
    with pytest.raises(SystemExit, match="sha256 is missing"):
        load_npz(path)


def test_the_augmentation_crops_and_flips_each_image_of_its_padding():
    layer = cifar10_grid._crop_flip_layer()(4, seed=1)
    images = np.random.default_rng(0).integers(
        1, 256, (8, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(to_numpy(layer(images)), images)  # test
    out = to_numpy(layer(images, training=True))
    padded = np.pad(images, [(0, 0), (4, 4), (4, 4), (0, 0)])
    draws = set()
    for image, original in zip(out, padded):
        found = [(r, c, f) for r in range(9) for c in range(9)
                 for f in (False, True)
                 if np.array_equal(image, original[r:r + 32, c:c + 32][
                     :, ::-1] if f else original[r:r + 32, c:c + 32])]
        assert len(found) == 1
        draws.add(found[0])
    assert len(draws) > 1  # one draw per image


def test_a_tiny_grid_end_to_end(tmp_path, monkeypatch):
    data = str(tmp_path / "data.npz")
    _npz(data, train=45)  # the last 5 left out: whole batches only
    output = str(tmp_path / "results.json")
    weights = str(tmp_path / "weights")
    fitted = []
    fit = keras.Model.fit

    def recording_fit(model, *args, **kwargs):
        fitted.append(model)
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    cifar10_grid.main([
        "--data", data, "--runs", "quadratic:8", "--seeds", "3",
        "--epochs", "2", "--warmup-epochs", "1", "--batch-size", "20",
        "--mixed-precision", "none", "--output", output, "--weights-dir",
        weights, "--plot", str(tmp_path / "curves.png"), "--verbose", "0",
        "--label-smoothing", "0.1", "--nesterov", "--target", "0.01",
        "--global-clipnorm", "5"])
    with open(output) as f:
        results = json.load(f)
    assert results["dataset"] == "cifar10" and results["recipe"]["epochs"] == 2
    assert results["recipe"]["label_smoothing"] == 0.1
    assert results["recipe"]["nesterov"] is True
    assert results["recipe"]["global_clipnorm"] == 5
    # and the run was trained with them
    trained, = fitted
    sgd = trained.optimizer.inner_optimizer
    assert sgd.nesterov and sgd.global_clipnorm == 5
    assert trained.loss.get_config()["label_smoothing"] == 0.1
    run, = results["runs"]
    assert (run["model"], run["depth"], run["neuron"], run["seed"],
            run["epochs"]) == ("QResNet8", 8, "quadratic", 3, 2)
    assert len(run["curves"]["val_accuracy"]) == 2
    # the quadratic terms' distance from linear, after each epoch
    assert [len(run["curves"][k]) for k in ("relinear_gate",
                                            "relinear_square")] == [2, 2]
    assert run["curves"]["relinear_square"][-1] > 0
    assert run["collapses_in_epochs"] == cifar10_grid.collapses(run["curves"])
    assert run["test_drops_after_epochs"] == cifar10_grid.test_drops(
        run["curves"])
    row = results["summary"]["QResNet8"]
    assert row["runs"] == 1 and row["seeds"] == [3] and row["sd"] is None
    assert row["mean"] == run["test_accuracy"]
    assert row["collapsed"] == bool(run["collapses_in_epochs"])
    assert row["at_or_above_target"] == int(run["test_accuracy"] >= 0.01)
    assert results["recipe"]["train_examples"] == 40
    assert run["test_accuracy"] == run["curves"]["val_accuracy"][-1]
    assert 0 <= run["test_accuracy"] <= 1 and run["seconds"] > 0
    assert os.path.getsize(tmp_path / "curves.png") > 0
    # the weights are the network's alone, and load into a plain QResNet
    model = kq.models.QResNet(8, weights=os.path.join(weights,
                                                      run["weights"]))
    square = model.get_layer("stage1_block1_conv1").square_kernel
    assert float(np.abs(to_numpy(square)).max()) > 0  # trained, with gamma
    assert keras.config.dtype_policy().name == "float32"


def test_collapses_are_read_from_training_and_test_drops_listed():
    curves = {"accuracy": [0.3, 0.5, 0.62, 0.55, 0.51, 0.7, 0.4],
              "loss": [2.0, 1.5, 1.1, 1.2, 1.3, 0.9, 1.6],
              "val_accuracy": [0.3, 0.45, 0.6, 0.38, 0.35, 0.65, 0.62]}
    # 0.51 < 0.62 - 0.1 in epoch 5 (0.55 in epoch 4 is within 0.1); up
    # again in 6; down in 7: two collapses
    assert cifar10_grid.collapses(curves) == [5, 7]
    assert cifar10_grid.collapses(curves, drop=0.05) == [4, 7]
    assert cifar10_grid.test_drops(curves) == [4]  # one fall, two epochs
    curves["loss"][1] = float("nan")  # a loss that is not finite
    assert cifar10_grid.collapses(curves) == [2, 5, 7]
    curves["val_accuracy"][4:] = [0.55, float("nan"), 0.6]  # up, NaN, up
    assert cifar10_grid.test_drops(curves) == [4, 6]
    steady = {"accuracy": [0.3, 0.25, 0.5], "loss": [2.0, 2.1, 1.4]}
    assert cifar10_grid.collapses(steady) == []
    runs = [dict(model="A", seed=s, test_accuracy=a, seconds=10.0 + s,
                 curves=c)
            for s, (a, c) in enumerate([(0.9, steady), (0.8, curves),
                                        (0.94, steady)])]
    runs.append(dict(model="A", seed=3, test_accuracy=None, seconds=5.0,
                     curves=curves, stopped_after_epoch=7))
    runs.append(dict(model="A", seed=4, skipped="time budget"))
    runs.append(dict(model="B", seed=0, skipped="time budget"))
    table = cifar10_grid.summary(runs, target=0.93)
    assert table["A"] == {
        "runs": 3, "seeds": [0, 1, 2], "mean": 0.88, "sd": 0.07211,
        "seconds_mean": 11.0, "collapsed": 2, "stopped": 1, "skipped": 1,
        "at_or_above_target": 1}
    assert table["B"]["runs"] == 0 and table["B"]["skipped"] == 1
    assert table["B"]["mean"] is None
    assert cifar10_grid.summary_line("A", table["A"], 0.93) == (
        "A: 88.00% +- 7.21 over seeds [0, 1, 2], 11 s a run, 2 of 4 "
        "collapsed, 1 at or above 93%, 1 stopped, 1 skipped")
    assert cifar10_grid.summary_line("B", table["B"]) == (
        "B: 0 of 0 collapsed, 1 skipped")


def test_a_run_past_its_deadline_stops_and_the_summary_and_plot_say_so(
        tmp_path):
    arrays = _npz(str(tmp_path / "data.npz"))
    data = (arrays["x_train"], arrays["y_train"].astype("int32"),
            arrays["x_test"], arrays["y_test"].astype("int32"))
    args = cifar10_grid.parse_args([
        "--data", "unused", "--epochs", "2", "--warmup-epochs", "1",
        "--batch-size", "20", "--mixed-precision", "none", "--verbose", "0"])
    record = cifar10_grid.train_one(args, "linear", 8, 0, data, deadline=0)
    assert record["stopped_after_epoch"] == 1
    assert record["test_accuracy"] is None
    assert len(record["curves"]["val_accuracy"]) == 1
    # the summary is in the file after every run
    output = str(tmp_path / "results.json")
    results = {"runs": [record]}
    cifar10_grid.save(results, output, target=0.5)
    with open(output) as f:
        row = json.load(f)["summary"]["ResNet8"]
    assert (row["runs"], row["stopped"], row["mean"]) == (0, 1, None)
    # a plot of a stopped run, a run whose test accuracy starts and ends
    # as NaN (a collapse marked where there is no value), and a quadratic
    # one beside the linear one
    nan = float("nan")
    broken = {"accuracy": [0.2, 0.1, 0.3], "loss": [2.0, nan, 1.9],
              "val_accuracy": [nan, 0.3, nan]}
    quadratic = {**broken, "relinear_gate": [0.1, nan, 0.2],
                 "relinear_square": [0.1, 0.2, 0.3]}
    results["runs"] += [
        dict(model="ResNet8", seed=1, curves=broken, test_accuracy=nan),
        dict(model="QResNet8", seed=0, curves=quadratic, test_accuracy=nan),
        dict(model="QResNet8", seed=1, skipped="time budget")]
    cifar10_grid.plot(results, str(tmp_path / "curves.png"))
    assert os.path.getsize(tmp_path / "curves.png") > 0


@pytest.mark.parametrize("argv,match", [
    (["--data", "x.npz", "--runs", "quadratic:21"], "6n\\+2"),
    (["--data", "x.npz", "--runs", "cubic:20"], "NEURON:DEPTH"),
    (["--data", "x.npz", "--epochs", "0"], "--epochs"),
    (["--runs", "linear:20"], "--data is required"),
    (["--data", "x.npz", "--label-smoothing", "1"], "--label-smoothing"),
    (["--data", "x.npz", "--target", "93"], "--target"),
    (["--data", "x.npz", "--global-clipnorm", "0"], "--global-clipnorm"),
    (["--data", "x.npz", "--nesterov", "--momentum", "0"], "--nesterov"),
    (["--data", "x.npz", "--momentum", "1.5"], "--momentum"),
])
def test_bad_flags_exit_2_with_a_line_that_names_them(argv, match, capsys):
    with pytest.raises(SystemExit) as exit:
        cifar10_grid.parse_args(argv)
    assert exit.value.code == 2
    assert re.search(match, capsys.readouterr().err)
