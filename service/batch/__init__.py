"""Batch scoring: a file of rows scored with the guarantees a request has.

``python -m service score`` (``service.cli.score``) is a thin shell over this package: the
version is resolved by label and verified before unpickling as the server does
(``target``), each chunk of the input (``reading``) is validated with the API's rules, row by
row (``rows``) and its good rows predicted (``scoring``, the per-chunk code), written to part
files (``writing``), its failing
rows to a rejects file with the API's 422 details, and a small state file (``state``) says how
far the run got, so an interrupted run resumes with the same ids. The run is recorded in the
store and the audit trail (``runs``), and a sample of its rows in the prediction log
(``sample``). ``run`` holds the loop; ``digest`` hashes the input meanwhile. ``spark`` runs the
same per-chunk code over a Spark DataFrame's partitions, and ``spark_run`` writes its outputs
with the same record, audit and sample. No Flask.
"""
