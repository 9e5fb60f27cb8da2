"""How fast two training runs that should agree drift apart: a diagnostic
for the accuracy figures of benchmarks/parity.py.

Two pairs, on the same batches (parity.py's in-memory pipeline) and the
same learning rates (examples/cifar10.py's schedule), in float64:

- keras-quadratic (the example's model and optimizer, trained with
  `train_on_batch`) against the PyTorch reference from the same initial
  weights (PyTorch's draw), the reference without decay of its quadratic
  weights (parity.py's one documented difference set aside) and with
  keras-quadratic's momentum rule (PyTorch's by default, Keras's with
  `--sgd keras`), so that the two compute the same update;
- the reference against itself with every learning rate scaled by
  1 + `--epsilon`, a perturbation at the level of float32 rounding.

Prints the relative L2 distance of the two runs' trainable weights after
each step: if keras-quadratic's steps equal the reference's, the first pair
stays near float64 rounding until the training's own chaos amplifies it,
as it does the second pair's perturbation. (After one step: about 2e-14
on TensorFlow, 2e-10 on JAX and torch, where some intermediate of Keras's
float64 path is rounded to float32, cause not found. On TensorFlow,
Keras's SGD (`--sgd keras`) casts its momentum 0.9 to float32 on the way
to float64, 2.65e-8 off, which shows from the second step on;
kq.optimizers.PyTorchSGD does not.)

    KERAS_BACKEND=tensorflow python benchmarks/divergence.py --npz subset.npz --steps 15

Needs torch next to the backend. CPU only (it hides any GPU): torch and
the Keras backend run in one process, which on a GPU could fight over the
CUDA libraries, and float64 is what the figures need.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def relative_distance(first, second):
    """|first - second| / |first| over lists of arrays, in float64."""
    import numpy as np

    num = sum(float(((np.asarray(a, "float64") - np.asarray(b, "float64"))
                     ** 2).sum()) for a, b in zip(first, second))
    den = sum(float((np.asarray(a, "float64") ** 2).sum()) for a in first)
    return (num / den) ** 0.5


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--npz", required=True,
                   help="uint8 CIFAR-10 arrays (make_cifar_subset.py)")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=6,
                   help="the schedule's length (parity.py's 6-epoch cosine "
                   "recipe by default); --steps of it are run")
    p.add_argument("--lr-schedule", choices=("step", "cosine"),
                   default="cosine")
    p.add_argument("--epsilon", type=float, default=1e-8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sgd", choices=("pytorch", "keras"),
                   default="pytorch",
                   help="keras-quadratic's momentum rule (parity.py's "
                   "--sgd); the reference is given the same one")
    args = p.parse_args(argv)
    if args.steps < 1 or args.epsilon <= 0:
        p.error("--steps must be at least 1 and --epsilon positive")

    # float64 throughout (JAX needs it enabled before it starts), on CPU
    os.environ["JAX_ENABLE_X64"] = "1"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch  # before the Keras backend (two frameworks, one process)

    import keras
    import numpy as np

    from keras_quadratic import cifar
    import parity
    from reference_weights import as_keras
    from reference_weights import copy_to_keras
    from reference_weights import keras_counterparts
    from torch_reference import ResNet
    from torch_reference import reference_optimizer

    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    recipe = parity.main_parser().parse_args([
        "--npz", args.npz, "--depth", str(args.depth), "--epochs",
        str(args.epochs), "--batch-size", str(args.batch_size),
        "--lr-schedule", args.lr_schedule, "--seeds", str(args.seed),
        "--sgd", args.sgd])
    recipe.seed = args.seed
    train, _ = parity.load_npz(recipe, "channels_last", args.seed)
    if args.steps > train.steps:
        p.error(f"--steps {args.steps}: the first epoch has {train.steps} "
                "steps at this --batch-size")
    rates = parity.learning_rates(recipe, train.steps)

    torch.manual_seed(args.seed)
    references = [ResNet(args.depth, "quadratic").double() for _ in "ab"]
    references[1].load_state_dict(references[0].state_dict())
    optimizers = [reference_optimizer(r, recipe.lr, recipe.gamma, 0.9,
                                      recipe.weight_decay,
                                      decay_quadratic=False)
                  for r in references]
    factors = [g["lr"] / recipe.lr for g in optimizers[0].param_groups]
    # the example's model and optimizer, from the reference's weights
    model = cifar.build_and_compile(
        cifar.parse_args(parity.recipe_flags(recipe, "quadratic")),
        train.steps, 10, "channels_last")
    copy_to_keras({k: v.numpy() for k, v in
                   references[0].state_dict().items()}, model)
    pairs = [(name, variable) for name, variable in keras_counterparts(model)
             if variable.trainable]
    if {variable.dtype for _, variable in pairs} != {"float64"}:
        raise RuntimeError("the Keras model is not float64 throughout")

    def reference_weights(reference):
        state = reference.state_dict()
        return [as_keras(name, state[name].numpy()) for name, _ in pairs]

    print(f"QResNet{args.depth}, float64, {keras.backend.backend()}; "
          "relative L2 distance of the trainable weights after each step\n"
          "| step | learning rate | keras-quadratic vs reference | "
          f"reference vs reference at lr x (1 + {args.epsilon:g}) |\n"
          "| ---: | ---: | ---: | ---: |")
    for step, (x, y) in zip(range(args.steps), train.epoch(0)):
        batch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).double()
        for reference, optimizer, scale in zip(references, optimizers,
                                               (1.0, 1.0 + args.epsilon)):
            parity.set_step_rate(optimizer, factors, rates * scale, step,
                                 args.sgd)
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(
                reference(batch), torch.from_numpy(y)).backward()
            optimizer.step()
        model.train_on_batch(x.astype("float64"), y.astype("int32"))
        ours = [keras.ops.convert_to_numpy(v) for _, v in pairs]
        first = reference_weights(references[0])
        print(f"| {step + 1} | {rates[step]:.4f} | "
              f"{relative_distance(first, ours):.2e} | "
              f"{relative_distance(first, reference_weights(references[1])):.2e} |",
              flush=True)


if __name__ == "__main__":
    main()
