"""Delayed feedback: examples, labels at a cutoff, label-flip probabilities and loss weights.

The contract is docs/delayed_feedback.md.

* ``examples``: the Delta ``examples`` table (first views, signals, conversions, as-of features)
* ``labels``: column expressions that read an example at a cutoff
* ``flip``: the flip probability z (hazard cells or MLlib) and the delay CDF s, with calibration
* ``weights``: per-example loss weights (vanilla, importance sampling, label correction, oracle)
* ``stage``: the pipeline stage writing ``flip_model``, ``flip_calibration``, ``training_weights``
* ``conversion``: the torch conversion model trained on those weights, and its evaluation harness
  (vanilla, oracle, waiting window, importance sampling, label correction -> ``conversion_metrics``)
* ``truth``: the true flip probability on generated data, to check the learned one against
"""
