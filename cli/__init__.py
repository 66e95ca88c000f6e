"""The composition root: the only package that wires the stages together.

``main.py`` is the ``smartzone`` command line, ``up.py`` runs everything locally in one process tree,
``services.py`` starts Debian's mosquitto and influxd on loopback (for ``up`` and the tests), and
``backfill.py`` runs a simulated past through the ingest pipeline into InfluxDB. Stages (ingest,
datacharter, api, dashboards, gateways) import the core (``smartzone``) and ``storage``, never each other
and never this package.
"""
