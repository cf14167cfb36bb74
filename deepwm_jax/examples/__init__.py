"""Worked examples of protecting things that are not a trained network (docs/strategies.md).

  classical   image algorithms (scikit-image) usable as task.source='python:...'
  dataset     watermark a data set with a kit, train a model on it, verify the model
"""
