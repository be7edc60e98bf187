"""Training: loaders and vocabularies, truncated-BPTT batches, optimisers and schedules,
checkpoints, metrics, the loop, evaluation and sampling (docs/training.md).

Nothing here knows how a model is executed: it drives `Model.run` (model.py) with
batches of token ids and updates `Model.params` in place.
"""
