"""Arrays → shuffled, batched, prefetched input for `model.fit`, on whichever Keras backend is active.

The arrays are already decoded (and uint8 for images), so an epoch is only index shuffling and gathering:
tf.data on TensorFlow; elsewhere a `keras.utils.PyDataset` whose worker threads prefetch batches, so JAX and
PyTorch installs need no TensorFlow.
"""

import keras
import numpy as np

# Devices each training batch is split evenly over (JAX's data parallelism: nnlab.training.distribute sets it while active).
_EVEN_SPLIT = [1]


def even_split(devices: int | None = None) -> int:
    """The count training batches must split evenly over (with `devices`: set it); returns the value before."""
    before = _EVEN_SPLIT[0]
    if devices is not None:
        _EVEN_SPLIT[0] = int(devices)
    return before


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0,
            threads: int | None = None, transform=None):
    """`threads` bounds the input pipeline's own threads (parallel sweep jobs sharing a few cores).
    `transform(x, y, rng)` changes each training batch (augmentation that must move the image and its target
    together); it runs in the threaded PyDataset on every backend."""
    if transform is not None:
        return ArrayBatches(x, y, batch_size, shuffle=shuffle, seed=seed, workers=threads or 2, transform=transform)
    if keras.backend.backend() == "tensorflow":
        return tf_batches(x, y, batch_size, shuffle=shuffle, seed=seed, threads=threads)
    return ArrayBatches(x, y, batch_size, shuffle=shuffle, seed=seed, workers=threads or 2)


def tf_batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0,
               threads: int | None = None):
    import tensorflow as tf

    n = len(x)
    indices = tf.data.Dataset.range(n)
    if shuffle:  # shuffling indices, not images: a full-size buffer costs 8 bytes an example
        indices = indices.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    indices = indices.batch(batch_size)
    # Each batch's rows are gathered from the NumPy arrays themselves (memory-mapped ones too): handing the arrays
    # to tf.data (from_tensors) would copy all of them into the graph before the first batch, as long as a whole
    # decoded first epoch of ImageDataGenerator on the fruits copy (0.2-0.65 s for 231 MB), and double the memory.
    arrays = [np.asarray(x), *(np.asarray(a) for a in keras.tree.flatten(y))]
    dtypes = [tf.as_dtype(a.dtype) for a in arrays]

    def gather(i):
        return [a[i] for a in arrays]

    def fetch(i):
        parts = tf.numpy_function(gather, [i], dtypes, stateful=False)
        for part, a in zip(parts, arrays):
            part.set_shape((None, *a.shape[1:]))
        return parts[0], keras.tree.pack_sequence_as(y, parts[1:])

    ds = indices.map(fetch, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if threads:  # tf.data otherwise sizes its pool to every core, whatever the op threads were set to
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        options.autotune.cpu_budget = threads
        ds = ds.with_options(options)
    return ds


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (x, y) sliced from arrays (memory-mapped ones too), reshuffled after every epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0,
                 workers: int = 2, transform=None):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        self.x, self.y, self.batch_size, self.shuffle = x, y, int(batch_size), shuffle
        self.transform, self.seed, self.epoch = transform, seed, 0
        self.rng = np.random.default_rng(seed)
        self.split = even_split() if shuffle else 1  # training batches only
        self.order = self.rng.permutation(len(x)) if shuffle else np.arange(len(x))

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index: int):
        # Sorted indices read a memory-mapped file front to back; the order inside a batch does not matter.
        rows = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
        if len(rows) % self.split:  # a short last batch, in `split` copies: the same mean loss and gradient
            rows = np.tile(rows, self.split)
        y = keras.tree.map_structure(lambda a: a[rows], self.y)
        if self.transform is None:
            return self.x[rows], y
        # A generator per batch: worker threads fetch batches in any order, the draws stay reproducible.
        return self.transform(self.x[rows], y, np.random.default_rng([self.seed, self.epoch, index]))

    def on_epoch_end(self) -> None:
        self.epoch += 1
        if self.shuffle:
            self.order = self.rng.permutation(len(self.x))
