"""Phase 3, layout: rows -> length buckets (``bucket``) or packed sequences (``pack``) -> padded tensors
(``pad``) -> Arrow shards (``shards``); ``spill`` holds the rows between the passes and pass 2 itself."""
