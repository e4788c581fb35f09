"""The site-packages stamp behind `[plugins] auto_reload`."""

from __future__ import annotations

import shutil
import time

from dihya.gate.sitewatch import site_stamp
from support.site import PluginSite


def test_the_stamp_changes_on_install_upgrade_and_removal(plugin_site: PluginSite) -> None:
    path = [str(plugin_site.site), "", str(plugin_site.root / "missing"), "/nonexistent.zip"]
    empty = site_stamp(path)
    assert [s[0] for s in empty] == [str(plugin_site.site)]  # missing entries are skipped
    assert site_stamp(path) == empty  # nothing changed, same stamp

    name = plugin_site.unique("stamp")
    plugin_site.install(name)
    installed = site_stamp(path)
    assert installed != empty
    assert any(n.endswith(".dist-info") for n, _ in installed[0][2])

    time.sleep(0.01)
    plugin_site.install(name, version="1.0.1")
    upgraded = site_stamp(path)
    assert upgraded not in (installed, empty)

    module = "dihya_plugin_" + name
    for old in [*plugin_site.site.glob(f"{module}-*.dist-info"), plugin_site.site / module]:
        shutil.rmtree(old)
    assert site_stamp(path) not in (upgraded, installed)
