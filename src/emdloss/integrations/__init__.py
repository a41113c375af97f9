"""Bridges to other frameworks; each submodule imports its framework only when used.

- :mod:`emdloss.integrations.transformers`: a ``compute_loss_func`` and a ``compute_metrics``
  for the Hugging Face ``Trainer``.
- :mod:`emdloss.integrations.onnx`: export of a trained run to ONNX (``emdloss export``).

The scikit-learn estimator lives in :mod:`emdloss.sklearn`.
"""
