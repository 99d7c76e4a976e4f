"""A hub tokenizer id that cannot be had: the error names the real cause (the Hub's answer), not the
offline retry's advice to pass ``local_files_only=False``."""

from __future__ import annotations

import huggingface_hub
import pytest

from padprep.chat.tokenizer import TokenizerError, load_tokenizer


def test_a_hub_id_not_cached_reports_the_first_error(monkeypatch):
    def snapshot_download(repo_id, allow_patterns=None, local_files_only=False):
        if local_files_only:
            raise FileNotFoundError("Cannot find an appropriate cached snapshot folder; pass 'local_files_only=False'")
        raise ConnectionError(f"Failed to resolve 'huggingface.co' for {repo_id}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(TokenizerError) as caught:
        load_tokenizer("padprep-test/not-cached")
    message = str(caught.value)
    assert "ConnectionError: Failed to resolve 'huggingface.co'" in message, message
    assert "local_files_only" not in message, message
    assert "not in the local cache either" in message, message
