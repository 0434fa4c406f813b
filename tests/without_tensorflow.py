"""Run `python -m nnlab ARGS` as on a machine where TensorFlow is not installed: any import of it fails.

Used by test_backends.py for the JAX and PyTorch backends (GPU machines often have only one of those).
"""

import importlib.machinery
import sys

BLOCKED = {"tensorflow", "tf_keras", "tensorboard", "tensorflow_cpu"}


class PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
    """The standard path finder, except that TensorFlow's packages are not found: `import` raises
    ModuleNotFoundError and `importlib.util.find_spec` returns None, exactly as when they are not installed."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [PathFinderWithoutTensorFlow if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
assert PathFinderWithoutTensorFlow in sys.meta_path

if __name__ == "__main__":
    from nnlab.cli import main

    sys.argv = ["nnlab", *sys.argv[1:]]
    main()
