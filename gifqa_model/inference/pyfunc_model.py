"""The model file MLflow stores and runs on load (models from code): it names the class that
serves, and does nothing else. gifqa_model travels beside it as the model's code."""

import mlflow

from gifqa_model.inference.pyfunc import GifQAPyfunc

mlflow.models.set_model(GifQAPyfunc())
