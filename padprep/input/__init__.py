"""Phase 1, input: files -> raw records (``read``) -> one ``Conversation`` per record (``formats``, ``conversation``).

A new input format goes in ``formats`` (its shape detected there, converted to messages there)."""
