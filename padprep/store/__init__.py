"""The tokenized store: pass 1's unpadded rows kept between builds, so that a new layout costs no tokenizing.

``store.py`` owns it (where it is, its keys, its entries, eviction, ``padprep cache``). Imports nothing of
a later phase than ``layout``.
"""

from padprep.store.store import (
    LAYOUT_OPTIONS,
    Entry,
    Store,
    default_root,
    open_store,
    token_parts,
)

__all__ = ["LAYOUT_OPTIONS", "Entry", "Store", "default_root", "open_store", "token_parts"]
