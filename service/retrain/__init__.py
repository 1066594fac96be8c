"""Retraining from production feedback: a challenger fitted on the base data plus the labelled
production rows, judged against the champion on the newest labelled rows, packaged with its
lineage when it wins. No Flask; the command line (``service.cli.retrain``) is a thin shell over
``service.retrain.run``.
"""
