"""examples/cifar10.py ended abruptly after its first epoch, once the
epoch's backup is written, as a preempted job ends (no cleanup, exit code
3): the first half of tests/test_distributed.py's resume test.

    python tests/interrupted_example.py [examples/cifar10.py's arguments]

Under a multi-process JAX distribution, every process first shuts JAX's
runtime down (a barrier: process 0 runs the coordination service, whose
sudden end would abort the others with SIGABRT before they end as planned).
"""

import os
import sys

import keras

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "examples"))
import cifar10  # noqa: E402


class EndAfterFirstEpoch(keras.callbacks.Callback):
    """Runs after the example's own callbacks (backup, logs) at the end of
    the first epoch, and ends the process there."""

    def on_epoch_end(self, epoch, logs=None):
        sys.stdout.flush()
        sys.stderr.flush()
        if keras.backend.backend() == "jax":
            import jax

            if jax.process_count() > 1:
                jax.distributed.shutdown()
        os._exit(3)


if __name__ == "__main__":
    cifar10.main(sys.argv[1:], extra_callbacks=[EndAfterFirstEpoch()])
