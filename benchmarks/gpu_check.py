"""The GPU check: does keras-quadratic compute on the GPU, how fast, and does
it learn there? For the jax and torch backends, each in its own process:

1. fails (exit 1, a `FAIL:` line) when the backend computes on the CPU;
2. on torch, checks that CUDA-graph steps (kq.callbacks.CUDAGraphTrainStep)
   leave the weights that eager steps leave;
3. times `model.fit` steps of QResNet20 and ResNet20 (batch 512 and 128,
   bf16 and float32; ReLinearOptimizer(PyTorchSGD) or PyTorchSGD) on
   in-memory data, after warm-up steps that include compilation: JAX
   compiled; torch with CUDA-graph steps and eager, and on a GPU the eager
   step with one factor changed at a time and torch.compile. Next to them
   the plain PyTorch reference (benchmarks/torch_reference.py, eager and
   channels_last) on the same card;
4. trains QResNet20 with ReLinear for a few epochs on a real CIFAR-10 subset
   (`--data`, made by benchmarks/make_cifar_subset.py) and reports the test
   accuracy after each epoch;
5. writes one JSON (`--output`; default docs/benchmarks/gpu-<card>.json
   on a GPU, runs/gpu_check.json with --smoke) and prints a table: images/s
   per row, ratio to the PyTorch reference's best setting, the card's name.

Needs no TensorFlow. Rows run in order of importance until `--budget`
seconds are spent; the rest are listed as skipped. `--smoke` runs the same
code on the CPU with tiny sizes (no GPU required) to keep it working.

    bash benchmarks/gpu.sh [--data .gpu-data/cifar10_subset.npz]
    bash benchmarks/gpu.sh --smoke
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BACKENDS = ("jax", "torch")


def sizes(smoke):
    """What to measure: full sizes on a GPU, tiny ones for --smoke."""
    if smoke:
        return dict(depth=8, batches=(8,), dtypes=("float32", "bfloat16"),
                    steps=2, warmup=1, epochs=1, train=128, test=64,
                    torch_compile=False, compile_seconds=0)
    return dict(depth=20, batches=(512, 128), dtypes=("bfloat16", "float32"),
                steps=50, warmup=5, epochs=5, train=None, test=None,
                torch_compile=True, compile_seconds=150)


def timing_rows(runner, cfg):
    """Rows in order of importance: (neuron, batch, dtype, step) tuples,
    `step` being how the training step runs:
    - jax: "jit" (Keras compiles every step);
    - torch: "cuda graph" (kq.callbacks.CUDAGraphTrainStep) and "eager"
      for each dtype and batch; then, on a GPU, the eager step with one
      factor changed at a time (cuDNN's autotuner off, channels_first
      data, the float32 policy under torch.autocast instead of the
      mixed_bfloat16 policy) and torch.compile (`jit_compile=True`, slow
      to compile: last);
    - the PyTorch reference: "eager" (its runner names the memory format).
    """
    if runner == "jax":
        steps = ("jit",)
    elif runner == "torch":
        steps = ("cuda graph", "eager")
    else:
        steps = ("eager",)
    rows = [("quadratic", batch, dtype, step) for step in steps
            for dtype in cfg["dtypes"] for batch in cfg["batches"]]
    rows += [("linear", batch, dtype, step) for step in steps
             for dtype in cfg["dtypes"][:1 if runner == "torch" else None]
             for batch in cfg["batches"]]
    if runner == "torch" and not cfg["smoke"]:
        first = ("quadratic", cfg["batches"][0], cfg["dtypes"][0])
        rows += [(*first, step) for step in DECOMPOSITION]
        if cfg["torch_compile"]:
            rows.append((*first, "torch.compile"))
    return rows


#: The torch eager step with one factor changed (bfloat16 rows).
DECOMPOSITION = ("eager, cudnn.benchmark off", "eager, channels_first",
                 "eager, autocast")


def save(report, path):
    """Writes the report now, so that a worker stopped later keeps it."""
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(path + ".tmp", path)


def measure(report, row, path, function):
    """Runs one row; an error is recorded in the row, not fatal."""
    try:
        function(row)
    except Exception as error:  # noqa: BLE001 - report it and go on
        row["error"] = f"{type(error).__name__}: {error}"[:500]
        print(f"  {report['runner']} {row.get('model')}: {row['error']}",
              flush=True)
    report["rows"].append(row)
    save(report, path)


def images(n, rng, shape=(32, 32, 3)):
    return rng.integers(0, 256, (n, *shape), dtype="uint8")


def normalize(x):
    """The harness's normalization (imported here: the driver process has
    no Keras backend of its own)."""
    import numpy as np

    from keras_quadratic.cifar import MEAN
    from keras_quadratic.cifar import STD

    return ((x.astype("float32") / 255.0 - np.float32(MEAN)) /
            np.float32(STD)).astype("float32")


# -- keras worker ----------------------------------------------------------
def keras_worker(cfg, deadline, data_path, path):
    import keras
    import numpy as np

    import keras_quadratic as kq

    if keras.backend.backend() == "torch":
        import torch

        torch.backends.cudnn.benchmark = True
    report = {"runner": keras.backend.backend(),
              "device": kq.devices.compute_device(), "rows": [],
              "training": None}
    if report["device"]["platform"] == "cpu" and not cfg["smoke"]:
        report["error"] = (f"the {report['runner']} backend computes on the "
                           "CPU")
        save(report, path)
        return
    rng = np.random.default_rng(0)

    # The learning check first: it is the claim that matters most.
    try:
        report["training"] = train_real(cfg, data_path, rng)
    except Exception as error:  # noqa: BLE001
        report["training"] = {"error": f"{type(error).__name__}: {error}"}
    save(report, path)

    def fit_row(row):
        neuron, batch, dtype, step = (row["neuron"], row["batch"],
                                      row["dtype"], row["step"])
        callbacks = [step_timer_class()(cfg["warmup"])]
        autocast = contextlib.nullcontext()
        if report["runner"] == "torch":
            import torch

            torch.backends.cudnn.benchmark = (
                step != "eager, cudnn.benchmark off")
            if step == "cuda graph":
                callbacks.append(kq.callbacks.CUDAGraphTrainStep())
            if step == "eager, autocast":
                autocast = torch.autocast(
                    kq.devices.compute_device()["platform"].replace(
                        "gpu", "cuda"), dtype=torch.bfloat16)
            if step == "torch.compile":
                import torch._dynamo

                torch._dynamo.reset()  # no recompile limit carried over
                for limit in ("recompile_limit", "cache_size_limit"):
                    if hasattr(torch._dynamo.config, limit):
                        setattr(torch._dynamo.config, limit, 64)
        channels_first = step == "eager, channels_first"
        keras.config.set_dtype_policy(
            "mixed_bfloat16" if dtype == "bfloat16" and
            step != "eager, autocast" else "float32")
        keras.utils.set_random_seed(0)
        model = kq.models.QResNet(
            cfg["depth"], neuron,
            input_shape=(3, 32, 32) if channels_first else (32, 32, 3),
            data_format="channels_first" if channels_first else
            "channels_last")
        keras.config.set_dtype_policy("float32")
        # PyTorch's momentum rule, as the reference's torch.optim.SGD (and
        # free of host syncs on torch, which a CUDA graph needs).
        optimizer = kq.optimizers.PyTorchSGD(0.01, momentum=0.9)
        if neuron != "linear":
            optimizer = kq.optimizers.ReLinearOptimizer(optimizer)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), jit_compile=step in ("jit", "torch.compile"))
        n = batch * (cfg["warmup"] + cfg["steps"])
        x = normalize(images(n, rng))
        if channels_first:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        y = rng.integers(0, 10, (n,)).astype("int32")
        start = time.perf_counter()
        with autocast:
            model.fit(x, y, batch_size=batch, verbose=0, shuffle=False,
                      callbacks=callbacks)
        timer = callbacks[0]
        row["warmup_seconds"] = timer.start - start
        row["images_per_second"] = batch * cfg["steps"] / timer.seconds
        if step == "cuda graph":
            row["graphs"] = callbacks[1].recorded_graphs
            row["fallback"] = callbacks[1].fallback_reason
        print(f"  {report['runner']} {row['model']} batch {batch} {dtype} "
              f"{step}: {row['images_per_second']:.0f} images/s", flush=True)

    if report["runner"] == "torch":
        try:
            report["graph_check"] = graph_check(cfg, rng)
        except Exception as error:  # noqa: BLE001
            report["graph_check"] = {"error": f"{type(error).__name__}: "
                                              f"{error}"[:500]}
        print(f"  torch CUDA graph check: {report['graph_check']}",
              flush=True)
        save(report, path)
    for neuron, batch, dtype, step in timing_rows(report["runner"], cfg):
        row = dict(model=f"{'Q' if neuron == 'quadratic' else ''}ResNet"
                   f"{cfg['depth']}", neuron=neuron, batch=batch, dtype=dtype,
                   step=step)
        left = deadline - time.time()
        if left <= 0 or (step == "torch.compile"
                         and left < cfg["compile_seconds"]):
            row["skipped"] = "time budget"
            report["rows"].append(row)
            save(report, path)
            continue
        measure(report, row, path, fit_row)


def step_timer_class():
    import keras

    class StepTimer(keras.callbacks.Callback):
        """Times the steps after the first `skip` (compilation, cuDNN's
        autotuning, a CUDA graph's recording) of one `fit`, waiting for
        the device at both ends (reading the step count does)."""

        def __init__(self, skip):
            super().__init__()
            self.skip, self.start, self.seconds = skip, None, None

        def _wait(self):
            keras.ops.convert_to_numpy(self.model.optimizer.iterations)
            return time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            if batch == self.skip:
                self.start = self._wait()

        def on_train_end(self, logs=None):
            self.seconds = self._wait() - self.start

    return StepTimer


def graph_check(cfg, rng):
    """Do CUDA-graph steps compute what eager steps compute? Two identical
    QResNets, float32, deterministic cuDNN without TF32, 3 epochs of 7
    batches of 32 and one of 16 (two graphs), with a learning rate that
    changes every step: the largest difference of any weight after."""
    import keras
    import numpy as np
    import torch

    import keras_quadratic as kq

    if kq.devices.compute_device()["platform"] != "gpu":
        return {"skipped": "no CUDA GPU"}
    flags = (torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = (
        True, False)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        x = normalize(images(7 * 32 + 16, rng))
        y = rng.integers(0, 10, (len(x),)).astype("int32")
        models, callback = [], kq.callbacks.CUDAGraphTrainStep(
            warmup_steps=2, cudnn_benchmark=False, fallback="raise")
        for callbacks in ([], [callback]):
            keras.utils.set_random_seed(0)
            model = kq.models.QResNet(cfg["depth"], "quadratic")
            schedule = keras.optimizers.schedules.CosineDecay(0.1, 24)
            model.compile(kq.optimizers.ReLinearOptimizer(
                kq.optimizers.PyTorchSGD(schedule, momentum=0.9)),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
            history = model.fit(x, y, batch_size=32, epochs=3, shuffle=False,
                                verbose=0, callbacks=callbacks)
            models.append((model, history.history))
        (eager, eager_logs), (graphed, graphed_logs) = models
        weights = [(np.asarray(a, np.float64), np.asarray(b, np.float64))
                   for a, b in zip(eager.get_weights(), graphed.get_weights())]
        return {
            "steps": 24, "graphs": callback.recorded_graphs,
            "max_abs_weight_difference": max(
                float(np.max(np.abs(a - b))) for a, b in weights),
            "max_abs_weight": max(float(np.max(np.abs(a))) for a, _ in weights),
            "eager_loss": eager_logs["loss"], "graph_loss": graphed_logs["loss"]}
    finally:
        (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
         torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = flags


def train_real(cfg, data_path, rng):
    """QResNet with ReLinear, a few epochs; test accuracy per epoch."""
    import keras
    import numpy as np

    import keras_quadratic as kq

    if data_path:
        with np.load(data_path) as data:
            x_train, y_train = data["x_train"], data["y_train"]
            x_test, y_test = data["x_test"], data["y_test"]
        source = os.path.basename(data_path)
    else:
        x_train, x_test = images(cfg["train"], rng), images(cfg["test"], rng)
        y_train = rng.integers(0, 10, (cfg["train"],))
        y_test = rng.integers(0, 10, (cfg["test"],))
        source = "random"
    keras.utils.set_random_seed(0)
    batch = 128 if not cfg["smoke"] else 32
    # Whole batches only: a last, smaller one would compile a second step.
    x_train, y_train = (a[:len(a) // batch * batch] for a in (x_train,
                                                              y_train))
    x_test, y_test = (a[:len(a) // batch * batch] for a in (x_test, y_test))
    steps = len(x_train) // batch
    model = kq.models.QResNet(cfg["depth"], "quadratic")
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [steps * (cfg["epochs"] - 1)], [0.1, 0.01])
    model.compile(
        kq.optimizers.ReLinearOptimizer(
            kq.optimizers.PyTorchSGD(schedule, momentum=0.9)),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    # On torch, the way the example trains there: CUDA-graph steps.
    graphs = kq.callbacks.CUDAGraphTrainStep()
    start = time.perf_counter()
    history = model.fit(
        normalize(x_train), y_train.astype("int32"), batch_size=batch,
        epochs=cfg["epochs"], shuffle=True, verbose=0, callbacks=[graphs],
        validation_data=(normalize(x_test), y_test.astype("int32")))
    accuracies = [round(float(a), 4) for a in history.history["val_accuracy"]]
    print(f"  {keras.backend.backend()} QResNet{cfg['depth']} on {source} "
          f"({len(x_train)} train / {len(x_test)} test): test accuracy per "
          f"epoch {accuracies}", flush=True)
    return {"data": source, "train_examples": int(len(x_train)),
            "test_examples": int(len(x_test)), "epochs": cfg["epochs"],
            "test_accuracy_per_epoch": accuracies,
            "seconds": time.perf_counter() - start,
            "cuda_graphs": graphs.recorded_graphs}


# -- plain PyTorch reference worker ---------------------------------------
def reference_worker(cfg, deadline, path):
    import torch

    sys.path.insert(0, HERE)
    torch.backends.cudnn.benchmark = True
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    report = {"runner": "reference", "rows": [], "training": None,
              "device": {"backend": "pytorch", "platform":
                         "gpu" if device == "cuda" else "cpu", "name": name,
                         "count": 1}}
    if device == "cpu" and not cfg["smoke"]:
        report["error"] = "PyTorch computes on the CPU"
        save(report, path)
        return
    for channels_last in (False, True):
        runner = "reference-channels-last" if channels_last else "reference"
        for neuron, batch, dtype, step in timing_rows(runner, cfg):
            row = dict(model=f"{'Q' if neuron == 'quadratic' else ''}ResNet"
                       f"{cfg['depth']}", neuron=neuron, batch=batch,
                       dtype=dtype, step=step, runner=runner)
            if time.time() > deadline:
                row["skipped"] = "time budget"
                report["rows"].append(row)
                save(report, path)
                continue
            measure(report, row, path, lambda row: reference_row(
                row, cfg, device, channels_last))


def reference_row(row, cfg, device, channels_last):
    import torch

    from torch_reference import training_step

    batch, dtype = row["batch"], row["dtype"]
    step, _ = training_step(cfg["depth"], row["neuron"], batch, dtype,
                            device, channels_last)
    for _ in range(cfg["warmup"]):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(cfg["steps"]):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    row["images_per_second"] = batch * cfg["steps"] / (
        time.perf_counter() - start)
    print(f"  {row['runner']} {row['model']} batch {batch} {dtype}: "
          f"{row['images_per_second']:.0f} images/s", flush=True)


# -- driver ----------------------------------------------------------------
def run_worker(runner, args, budget, folder):
    """One runner in its own process, stopped after its budget and a grace
    period; what it measured until then is kept."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, env.get("PYTHONPATH")) if p)
    if runner != "reference":
        env["KERAS_BACKEND"] = runner
    path = os.path.join(folder, f"{runner}.json")
    command = [sys.executable, os.path.abspath(__file__), "--worker", runner,
               "--budget", str(budget), "--report", path]
    if args.smoke:
        command.append("--smoke")
    if args.data:
        command += ["--data", args.data]
    error = None
    try:
        result = subprocess.run(command, env=env, timeout=budget + 60)
        if result.returncode != 0:
            error = f"worker exited with {result.returncode}"
    except subprocess.TimeoutExpired:
        error = f"worker stopped after {budget + 60:.0f} s"
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError):
        report = {"runner": runner, "rows": [], "training": None}
    if error and not report.get("error"):
        report["error"] = error
    return report


def module_missing(runner):
    import importlib.util

    module = "torch" if runner == "reference" else runner
    missing = [m for m in (module, "keras") if runner != "reference" or
               m == module]
    return [m for m in missing if importlib.util.find_spec(m) is None]


def table(reports):
    reference = {}
    for report in reports:
        for row in report["rows"]:
            if report["runner"] == "reference" and "images_per_second" in row:
                key = (row["model"], row["batch"], row["dtype"])
                reference[key] = max(reference.get(key, 0),
                                     row["images_per_second"])
    lines = ["| runner | model | batch | dtype | step | images/s | "
             "x PyTorch reference |",
             "| --- | --- | ---: | --- | --- | ---: | ---: |"]
    for report in reports:
        if report.get("error"):
            lines.append(f"| {report['runner']} | {report['error']} | | | | "
                         "| |")
        for row in report["rows"]:
            runner = row.get("runner", report["runner"])
            if "images_per_second" not in row:
                why = (f"skipped ({row['skipped']})" if "skipped" in row
                       else f"error: {row.get('error', '?')[:80]}")
                lines.append(f"| {runner} | {row['model']} | {row['batch']} "
                             f"| {row['dtype']} | {row['step']} | {why} | |")
                continue
            ref = reference.get((row["model"], row["batch"], row["dtype"]))
            ratio = (f"{row['images_per_second'] / ref:.2f}"
                     if ref and report["runner"] != "reference" else "-")
            lines.append(f"| {runner} | {row['model']} | {row['batch']} | "
                         f"{row['dtype']} | {row['step']} | "
                         f"{row['images_per_second']:.0f} | {ratio} |")
    for report in reports:
        check = report.get("graph_check")
        if check:
            lines.append(f"\n{report['runner']}: CUDA graph steps against "
                         f"eager steps: {check}")
    for report in reports:
        t = report.get("training")
        if t and "error" in t:
            lines.append(f"\n{report['runner']}: training failed: "
                         f"{t['error'][:200]}")
        elif t:
            lines.append(f"\n{report['runner']}: QResNet on {t['data']} "
                         f"({t['train_examples']} train, {t['test_examples']}"
                         f" test), test accuracy after each of "
                         f"{t['epochs']} epochs: "
                         f"{', '.join(map(str, t['test_accuracy_per_epoch']))}")
    return "\n".join(lines)


def card_slug(card):
    """'NVIDIA H100 80GB HBM3' -> 'h100'."""
    words = [w for w in card.split() if w.upper() not in ("NVIDIA", "TESLA",
                                                          "GEFORCE")]
    return (words[0] if words else "gpu").lower()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes on any device (keeps the script working)")
    p.add_argument("--data", default=None,
                   help="npz of uint8 x_train, y_train, x_test, y_test "
                   "(benchmarks/make_cifar_subset.py); random data if absent")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole check (default 390, smoke 150)")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS),
                   choices=BACKENDS)
    p.add_argument("--output", default=None,
                   help="JSON path (default "
                   "runs/gpu_check.json)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--report", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    budget = args.budget or (150.0 if args.smoke else 390.0)
    cfg = dict(sizes(args.smoke), smoke=args.smoke)

    if args.worker:  # one runner in this process, its report in a file
        deadline = time.time() + budget
        if args.worker == "reference":
            reference_worker(cfg, deadline, args.report)
        else:
            keras_worker(cfg, deadline, args.data, args.report)
        return 0

    start = time.time()
    output = args.output or os.path.join(ROOT, "runs", "gpu_check.json")
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    runners = ["reference", *args.backends]
    reports, failures = [], []
    for i, runner in enumerate(runners):
        missing = module_missing(runner)
        if missing:
            reports.append({"runner": runner, "rows": [], "training": None,
                            "error": f"not installed: {', '.join(missing)}"})
        else:
            # What is left of the budget, shared by the runners still to go.
            left = budget - (time.time() - start)
            share = left / (len(runners) - i)
            print(f"{runner}: up to {share:.0f} s", flush=True)
            reports.append(run_worker(runner, args, max(share, 1.0), folder))
        if reports[-1].get("error") and not args.smoke:
            failures.append(f"{runner}: {reports[-1]['error']}")
        card = next((r["device"]["name"] for r in reports
                     if r.get("device", {}).get("platform") == "gpu"),
                    "no GPU")
        with open(output, "w") as f:  # after each runner: nothing is lost
            json.dump({"card": card, "smoke": args.smoke,
                       "date": time.strftime("%Y-%m-%d"), "reports": reports},
                      f, indent=2)
    if not args.output and not args.smoke and card != "no GPU":
        output = os.path.join(ROOT, "docs", "benchmarks",
                              f"gpu-{card_slug(card)}.json")
        with open(output, "w") as f:
            json.dump({"card": card, "smoke": args.smoke,
                       "date": time.strftime("%Y-%m-%d"), "reports": reports},
                      f, indent=2)
    text = table(reports)
    print(f"\nGPU check ({'smoke, ' if args.smoke else ''}{card}, "
          f"{time.strftime('%Y-%m-%d')}, {time.time() - start:.0f} s)\n")
    print(text)
    print(f"\nwrote {output}")
    for failure in failures:
        print(f"FAIL: {failure}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
