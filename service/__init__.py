"""A production prediction server for scikit-learn models.

The request's path reads from the packages: ``api`` (HTTP, the only Flask user) ->
``protocols`` (wire codecs) -> ``serving`` (catalog, validation, runtime) -> ``models``
(artifacts, registry, rollout) and ``store``; ``monitoring`` observes after the answer.
``service.app.create_app`` builds the WSGI app. Importing this package loads nothing heavy.
"""
