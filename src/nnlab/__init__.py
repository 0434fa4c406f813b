"""nnlab: describe a neural-network lab experiment in YAML, train it with Keras, log it to MLflow.

Importing the package is cheap on purpose: Keras/TensorFlow and MLflow are imported only when a job runs,
so `nnlab --cfg job` and config errors answer in about a second.
"""

__version__ = "0.1.0"
