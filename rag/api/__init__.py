"""The HTTP API: FastAPI routes over ``RagService`` (parse, call the service, shape the reply).

``rag.api.app.create_api`` builds the application; ``app.py`` mounts it under ``/api`` beside
the Streamlit pages, so one server and one port serve both. One module per area: ``ask``
(answers, and the OpenAI-compatible route), ``documents``, ``conversations``, ``jobs``,
``health``; ``errors`` turns every failure into one JSON error shape and ``schemas`` holds
the request and response models.
"""
