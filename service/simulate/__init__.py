"""`labelloop simulate`: realistic traffic through the Python client, a scenario's traffic model
(scenarios.py, pure) paced and posted by the runner (run.py)."""
