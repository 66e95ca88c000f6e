"""Protocol experiments on gateways: book, schedule and account for researchers' code on the gateways' radios.

The store (SQLAlchemy 2, Alembic migrations shipped in ``experiments/migrations``), bearer tokens stored
hashed, FIT IoT-LAB's state machine, the booking service the REST API calls, artifacts, the scheduler that
moves experiments through time and talks to the gateways' agents over MQTT, and the broker's per-experiment
users. The sample experiments in ``samples/`` run on gateways, not here (docs/parts/experiments.md).
"""
