"""What MLflow runs to load a model ``packaged.package`` logged ("models from code"): it names
the pyfunc. MLflow has put the model's ``code/`` on ``sys.path`` first, so this imports the
emoprune the model was logged with."""

import mlflow.models

from emoprune.pipeline.packaged import FoldModel

mlflow.models.set_model(FoldModel())
