"""Benchmark runner: training-step time of QResNet20/56 (quadratic, compact,
linear) on each Keras backend, one process per measurement, and of the
original PyTorch network; prints a markdown table and writes JSON.

    python benchmarks/run.py                       # all three backends
    python benchmarks/run.py --backends jax --depths 20
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import matmul_gflops  # noqa: E402
from common import train_flops  # noqa: E402


def _run(script, args, env=None):
    env = dict(os.environ, **(env or {}))
    # the package from this checkout, installed or not
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(HERE), env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, script), *args],
        capture_output=True, text=True, env=env)
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", nargs="+",
                   default=["tensorflow", "jax", "torch"])
    p.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    p.add_argument("--neurons", nargs="+",
                   default=["quadratic", "compact", "linear"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dtype", nargs="+", default=["float32"],
                   choices=("float32", "bfloat16"))
    p.add_argument("--no-reference", action="store_true",
                   help="skip the plain PyTorch reference")
    p.add_argument("--output", default="runs/benchmark.json")
    args = p.parse_args(argv)

    matmul = matmul_gflops()
    print(f"matmul (float32, 2048x2048, best of PyTorch and NumPy): "
          f"{matmul:.1f} GFLOP/s",
          flush=True)
    results = []
    for dtype in args.dtype:
        for depth in args.depths:
            if not args.no_reference:
                for neuron in ("quadratic", "linear"):
                    if neuron not in args.neurons:
                        continue
                    r = _run("torch_reference.py", [
                        "--depth", str(depth), "--neuron", neuron,
                        "--batch", str(args.batch), "--steps",
                        str(args.steps), "--dtype", dtype])
                    if r:
                        results.append(r)
                        print(f"  {r['backend']} {depth} {neuron} {dtype}: "
                              f"{1000 * r['seconds']:.0f} ms", flush=True)
            for backend in args.backends:
                for neuron in args.neurons:
                    r = _run("keras_step.py", [
                        "--depth", str(depth), "--neuron", neuron,
                        "--batch", str(args.batch), "--steps",
                        str(args.steps), "--dtype", dtype],
                        env={"KERAS_BACKEND": backend,
                             "TF_CPP_MIN_LOG_LEVEL": "3"})
                    if r:
                        results.append(r)
                        print(f"  {backend} {depth} {neuron} {dtype}: "
                              f"{1000 * r['seconds']:.0f} ms", flush=True)
    table = markdown(results, matmul, args.batch)
    print()
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"matmul_gflops": matmul, "results": results}, f, indent=2)
    return results


def markdown(results, matmul, batch):
    def find(backend, depth, neuron, dtype):
        for r in results:
            if (r["backend"], r["depth"], r["neuron"], r["dtype"]) == (
                    backend, depth, neuron, dtype):
                return r
        return None

    lines = [
        "| backend | model | neuron | dtype | ms/step | images/s | GFLOP/s "
        "| x own linear | x PyTorch ref | x FLOP floor | peak MiB |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for r in results:
        flops = train_flops(r["depth"], r["neuron"], batch)
        linear = find(r["backend"], r["depth"], "linear", r["dtype"])
        ref = find("pytorch-reference", r["depth"], r["neuron"], r["dtype"])
        floor = flops / (matmul * 1e9)
        ratio = lambda other: (f"{r['seconds'] / other['seconds']:.2f}"  # noqa
                               if other else "-")
        name = "ResNet" if r["neuron"] == "linear" else "QResNet"
        lines.append(
            f"| {r['backend']} | {name}{r['depth']} | {r['neuron']} | "
            f"{r['dtype']} | {1000 * r['seconds']:.0f} | "
            f"{batch / r['seconds']:.0f} | {flops / r['seconds'] / 1e9:.1f} "
            f"| {ratio(linear)} | "
            f"{ratio(ref) if r['backend'] != 'pytorch-reference' else '-'} | "
            f"{r['seconds'] / floor:.2f} | {r['peak_memory_mb']:.0f} |")
    lines.append("")
    lines.append(f"FLOP floor: training FLOPs (2 per multiply-add, 3x "
                 f"forward) / {matmul:.1f} GFLOP/s measured matmul rate.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
