"""Images/second of the CIFAR-10 example's training input pipeline
(`keras_quadratic.cifar.training_pipeline`: uint8 images in memory, each
batch gathered by a seeded permutation, augmented and normalized whole)
against the per-image design it replaced (float32 cache, one map call per
image for crop and flip), on the same data, after one warm-up epoch (that
fills the latter's cache).

    python benchmarks/input_pipeline.py --data-dir DIR [--split train]
"""

import argparse
import json
import os
import time


def per_image_pipeline(dataset, batch_size, seed):
    """The earlier design, kept here as the baseline."""
    import tensorflow as tf

    from keras_quadratic import cifar

    mean = tf.constant(cifar.MEAN, tf.float32)
    std = tf.constant(cifar.STD, tf.float32)

    def normalize(image, label):
        return (tf.cast(image, tf.float32) / 255.0 - mean) / std, label

    def augment(image, label):
        image = tf.image.pad_to_bounding_box(image, 4, 4, 40, 40)
        image = tf.image.random_crop(image, (32, 32, 3))
        return tf.image.random_flip_left_right(image), label

    dataset = dataset.map(normalize, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.cache().shuffle(10_000, seed=seed)
    dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(
        tf.data.AUTOTUNE)


def images_per_second(epoch_of, epochs):
    """Images/second over `epochs` epochs after a warm-up epoch;
    `epoch_of(e)` iterates epoch e."""
    for _ in epoch_of(0):
        pass
    count, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        for images, _ in epoch_of(epoch):
            count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args(argv)
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from keras_quadratic import cifar

    tf.config.set_visible_devices([], "GPU")
    source = tfds.load("cifar10", split=args.split, data_dir=args.data_dir,
                       download=False, as_supervised=True)
    examples = cifar.in_memory(source)
    per_image = per_image_pipeline(source, args.batch_size, 0)
    results = {
        "batched_uint8": images_per_second(
            lambda epoch: cifar.training_pipeline(
                examples, args.batch_size, "channels_last", 0, epoch + 1,
                epoch), args.epochs),
        "per_image_float32": images_per_second(lambda epoch: per_image,
                                               args.epochs),
        "cpus": os.cpu_count(), "split": args.split,
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
