"""Everything one trial needs: config, data, models, losses, metrics and the training engine.

The engine (every subpackage except :mod:`trainables.trainable`) imports neither ray nor mlflow,
so a trial runs, is tested and is benchmarked anywhere torch runs.
"""
