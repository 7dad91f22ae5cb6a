"""A stand-in for Salt's systemd ``service`` module, for a machine without systemd (a container):
it keeps each unit's state in a JSON file and logs every call, so a test sees exactly what the
formula's ``service.running`` did (started, enabled, restarted on a watched change, or nothing).

Selected by the test's minion config (``providers: {service: fakesystemd}``); the state file is
``fake_systemd_state`` from that config.
"""

import json
import os

__virtualname__ = "service"


def __virtual__():
    return __virtualname__


def _path():
    return __opts__["fake_systemd_state"]  # noqa: F821 - injected by Salt's loader


def _load():
    try:
        with open(_path()) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"units": {}, "calls": []}


def _save(data):
    tmp = _path() + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, _path())


def _do(call, name, **change):
    data = _load()
    unit = data["units"].setdefault(name, {"running": False, "enabled": False})
    unit.update(change)
    data["calls"].append([call, name])
    _save(data)
    return True


def _unit(name):
    return _load()["units"].get(name, {"running": False, "enabled": False})


def _unit_file(name):
    directory = __opts__.get("fake_systemd_unit_dir", "/etc/systemd/system")  # noqa: F821
    return os.path.join(directory, name + ".service")


def available(name):
    return os.path.exists(_unit_file(name))


def missing(name):
    return not available(name)


def get_all():
    return sorted(_load()["units"])


def status(name, sig=None):
    return bool(_unit(name)["running"])


def enabled(name, **kwargs):
    return bool(_unit(name)["enabled"])


def disabled(name, **kwargs):
    return not enabled(name)


def start(name, **kwargs):
    return _do("start", name, running=True)


def stop(name, **kwargs):
    return _do("stop", name, running=False)


def restart(name, **kwargs):
    return _do("restart", name, running=True)


def reload_(name, **kwargs):
    return _do("reload", name, running=True)


def enable(name, **kwargs):
    return _do("enable", name, enabled=True)


def disable(name, **kwargs):
    return _do("disable", name, enabled=False)


__func_alias__ = {"reload_": "reload"}


def offline():
    # Salt's own systemd module says "offline" without a running systemd and does nothing.
    return False
