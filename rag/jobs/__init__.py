"""Jobs on a task queue: batch question runs, model comparisons and ingestion.

The queue is Huey: ``SqliteHuey`` under the data directory (worker threads in the app's
own process) or ``RedisHuey`` when ``RAG_QUEUE_URL`` names a Redis server (``ragchat
worker`` processes on any number of machines). A job is a record in a results store plus
one task per question; the store, not the queue, is the source of truth:

- ``store``: the durable job records, inputs, result rows and claims (SQLite or Redis);
- ``queue``: the Huey instance, its tasks, worker threads and recovery after a crash;
- ``inputs``: reading batch files (JSONL or CSV) and checking their rows;
- ``answering``: answering one question (or one per model, to compare) into a row;
- ``metrics``: the ``ragchat eval`` metrics of a labelled batch.
"""
