"""Phase 2, chat: a ``Conversation`` -> rendered text and trained spans (``templates``, ``render``) -> token ids
(``tokenizer``, ``encode``) -> labels (``mask``); ``process`` runs the phase over a chunk of records."""
