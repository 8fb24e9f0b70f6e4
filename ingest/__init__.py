"""The document side of ragchat: loaders, chunking, the ingestion pipeline and its CLI."""
