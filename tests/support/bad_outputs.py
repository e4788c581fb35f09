"""A plugin hook returning output that validation must refuse as unwritable, chosen by needs.

`needs["project"]` (a valid slug) selects the bad output, so one installed plugin (and, in
sandbox mode, one worker) covers every case. Shared by the in-process and sandbox tests.
"""

from __future__ import annotations

# project slug -> the line the hook adds, and what the report's detail says
BAD_OUTPUTS = {
    "through-file": ('code["README.md/child.txt"] = "x"', "goes through 'README.md'"),
    "long-name": ('code["docs/" + "a" * 253 + ".md"] = "x"', "256 bytes"),
    "long-utf8-name": ('code["\\u00e9" * 128] = "x"', "256 bytes"),
    "surrogate-path": ('code["bad\\ud800.txt"] = "x"', "lone surrogate U+D800"),
    "surrogate-content": ('code["ok.txt"] = "text \\udfff"', "lone surrogate U+DFFF"),
}

BAD_PLUGIN = "\ndef after_generation(self, code, needs):\n" + "".join(
    f"    if needs['project'] == {kind!r}:\n        {line}\n"
    for kind, (line, _) in BAD_OUTPUTS.items()) + "    return code\n"
