"""Monitoring: what the model sees and how it does, measured against its reference profile.

The maths modules here are pure (numpy/scipy in, plain dicts out) and never import Flask;
they observe after the answer and never fail a request. Shapes shared between them:

* A *window* is what the prediction log holds for one model version over the last N
  predictions or T minutes: ``columns`` (feature name -> numpy array, NaN/None for missing),
  ``predictions`` (numpy array), optionally ``probabilities`` (n x k) and, after feedback,
  ``labels`` (ground truth, aligned, None where unknown).
* A *reference profile* is ``manifest["reference_profile"]`` written at packaging
  (``service.models.profile``): per feature ``kind`` numeric (``bin_edges``, ``frequencies``,
  ``sample``, ``min``/``max``, ``mean``/``std``, ``missing_rate``) or categorical
  (``categories``: value -> share, ``other_rate``, ``missing_rate``); and ``prediction``
  profiled the same way.
* Statuses are ``ok`` < ``warn`` < ``alert``; a report's status is its worst part's.
"""
