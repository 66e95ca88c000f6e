"""Protocol experiments on gateways (issue 16): the store, tokens and the experiment state machine.

This is the foundation: SQL tables through SQLAlchemy 2 with Alembic migrations shipped in the package
(``experiments/migrations``), bearer tokens stored hashed, and the FIT IoT-LAB state machine. The REST
layer, scheduling and the gateway side build on it.
"""
