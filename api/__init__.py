"""The open-data API (FastAPI), reading only the open database (built by the open-data API issue)."""
