"""The question side of ragchat: settings, store, retrieval, chain, citations, memory."""
