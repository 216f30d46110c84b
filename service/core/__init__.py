"""The label rules as pure Python: policies, joins, resolution, windows and watermarks.

Nothing here imports HTTP, SQL or Kafka code; the store and the consumers call into it.
"""
