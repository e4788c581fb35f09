"""Reading the backend config: `[plugins]` keys and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dihya.config import ConfigError, load_config


def test_auto_reload_is_off_unless_set(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("[plugins]\nhook_timeout_s = 1.0\n")
    assert load_config(path).auto_reload is False
    path.write_text("[plugins]\nauto_reload = true\n")
    assert load_config(path).auto_reload is True


@pytest.mark.parametrize(("text", "message"), [
    ('[plugins]\nauto_reload = "yes"\n', "[plugins] auto_reload must be true or false, not 'yes'"),
    ("[plugins]\nautoreload = true\n",
     "unknown keys ['autoreload']; known: allow, auto_reload, group, hook_timeout_s, "
     "known_pth, publishers"),
])
def test_a_wrong_auto_reload_is_refused_with_the_fix(tmp_path: Path, text: str,
                                                     message: str) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value) and str(path) in str(info.value)
