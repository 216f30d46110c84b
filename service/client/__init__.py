"""labelloop's Python client: log predictions and events (batched in the background, retried),
pull the dataset incrementally.

    from service.client import Client

    with Client.from_env() as labelloop:          # LABELLOOP_URL, LABELLOOP_API_KEY
        labelloop.log_prediction("rec-1", "recsys", model="ranker", features={"position": 1})
        labelloop.log_event("click-1", "rec-1", "click", actor="user:42")
        rows = labelloop.iter_dataset("recsys", since=last_seq, final_only=True)
        frame = rows.to_pandas()
        last_seq = rows.last_seq
"""

from service.client._wire import LabelloopError, Receipt, Rejected, Retry, Undelivered
from service.client.aio import AsyncClient, AsyncDataset
from service.client.sync import Client, Dataset

__all__ = [
    "AsyncClient",
    "AsyncDataset",
    "Client",
    "Dataset",
    "LabelloopError",
    "Receipt",
    "Rejected",
    "Retry",
    "Undelivered",
]
