"""Images/second of the CIFAR-10 example's training input pipeline
(`keras_quadratic.cifar.pipeline`: uint8 cache, augmentation and
normalization on whole batches) against the per-image design it replaced (float32 cache, one map
call per image for crop and flip), on the same data, after one warm-up
epoch that fills the caches.

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


def images_per_second(dataset, epochs):
    for _ in dataset:  # warm-up: fills the cache
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _ in dataset:
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
    results = {
        "batched_uint8": images_per_second(cifar.pipeline(
            source, args.batch_size, True, "channels_last", 0), args.epochs),
        "per_image_float32": images_per_second(per_image_pipeline(
            source, args.batch_size, 0), args.epochs),
        "cpus": os.cpu_count(), "split": args.split,
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
