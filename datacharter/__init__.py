"""The data charter: the city's privacy agreement, executable.

``charter.yaml`` is the agreement (``charter.py`` validates it, ``explain.py`` says it in plain language);
identifiers of passers-by are pseudonymised at ingestion (``ingest/pepper.py``); ``job.py`` runs ``engine.py`` over the
raw database in daily windows and writes only groups of at least k subjects to the open database.
"""
