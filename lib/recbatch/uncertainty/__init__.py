"""Per-prediction uncertainty: estimators behind one interface, and the ``scores`` stage."""
