"""Storage: line protocol, the InfluxDB HTTP client, the batch writer with its disk spool, dead letters."""
