"""Recommendations with an uncertainty and a certified decision (docs/links.md).

One file per step, as ``recbatch.thresholds``:

* ``settings``: the ``link_uncertainty:`` section (``link_thresholds:`` is a ``ThresholdSettings``);
* ``members``: the scored model's members: MC-dropout draws of BLADE's composite, or its
  deterministic vectors for bootstrap heads;
* ``scorer``: ``LinkScorer``, the torch module ``recbatch.uncertainty`` scores, and the fit of
  its calibration and bootstrap heads;
* ``pairs``: the labelled pairs (held-out edges against sampled non-edges of the same source);
* ``stage``: the ``link_scores``, ``link_thresholds`` and ``link_decisions`` stages.
"""
