"""Multimodal alert models (the only torch code of the broker).

* :class:`models.predictor.MultimodalPredictor` and :func:`models.predictor.load_default`:
  the :class:`broker.predict.Predictor` implementation and the shipped weights;
* :func:`models.train.cli_main`: ``alertbroker train`` (options in :mod:`models.train_cli`);
* :func:`models.evaluate.cli_main`: ``alertbroker eval classify|photoz|anomaly``.

See ``docs/models.md``.
"""
