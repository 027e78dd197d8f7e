"""requirements.txt and environment.yml pin the same packages at the same versions."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert "==" in line, f"not an exact pin: {line!r}"
        name, version = line.split("==")
        pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_requirements_and_environment_agree():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert req == _pins(pip_section)


def test_pins_include_the_known_good_set():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert req["torch"] == "2.14.1" and req["torchvision"] == "0.29.1" and req["lpips"] == "0.1.4"
    assert req["jupyter-book"].startswith("1."), "jupyter-book 2.x cannot build offline"
