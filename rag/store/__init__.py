"""Store backends. ``faiss``: FAISS vectors with SQLite text and metadata, on one machine."""
