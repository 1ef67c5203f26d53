"""The README's configuration table says what the settings table says."""

import re
from pathlib import Path

from service import SETTINGS

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(r"^\|\s*`(?P<name>[A-Z0-9_]+)`\s*\|\s*(?P<default>[^|]*?)\s*\|")


def readme_configuration_rows() -> dict[str, str]:
    text = README.read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            rows[match["name"]] = match["default"].strip("`")
    return rows


def test_readme_lists_every_setting_with_its_default():
    documented = readme_configuration_rows()
    assert documented == {setting.name: setting.default for setting in SETTINGS}
