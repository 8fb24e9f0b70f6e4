"""The human review loop: answers worth a second look, and the corrections reviewers write.

An answer is queued when it abstained, when a citation is weakly supported, or when its
reader rated it down (``capture``). An editor or admin marks it right or wrong and may write
the correct answer with its sources (``store``). A reviewed answer is served for the same
question in the same collections, ahead of the model, while the documents it cites are
unchanged (``serve``), and ``ragchat review export`` writes reviewed answers as ``ragchat
eval`` lines (``export``). Who may do what is decided in ``rag.service.review``.
"""
