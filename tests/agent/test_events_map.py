"""Events map rules: declarative header conditions, validated in the hub, applied by the agent."""

from __future__ import annotations

import pytest

from callbridge.agent.config import AgentConfigError, build
from callbridge.domain.errors import InvalidInput
from callbridge.services.agents import EventsMap, agent_settings, guard_settings, parse_rules


def _headers(**values: str):  # type: ignore[no-untyped-def]
    return lambda key: values.get(key, "")


def test_conditions_equals_starts_with_regex_and_negate() -> None:
    rules = parse_rules(
        [
            {
                "event": "Hangup",
                "conditions": [{"header": "Channel", "op": "starts_with", "value": "Local/", "negate": True}],
            },
            {
                "event": "VarSet",
                "conditions": [{"header": "Variable", "op": "equals", "value": "MIXMONITOR_FILENAME"}],
            },
            {
                "event": "Newexten",
                "conditions": [{"header": "AppData", "op": "regex", "value": r"monitor/\w+"}],
            },
        ]
    )
    events = EventsMap(rules)
    assert events.wants("Hangup", _headers(Channel="PJSIP/1001-0001"))
    assert not events.wants("Hangup", _headers(Channel="Local/1001@x-0001;1"))
    assert events.wants("VarSet", _headers(Variable="MIXMONITOR_FILENAME"))
    assert not events.wants("VarSet", _headers(Variable="OTHER"))
    assert events.wants("Newexten", _headers(AppData="/var/spool/monitor/abc"))
    assert not events.wants("Newstate", _headers())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"rules": []}, "list of rules"),
        ([{"event": "Hangup; rm -rf /"}], "AMI event name"),
        (
            [{"event": "Hangup", "conditions": [{"header": "Channel", "op": "eval", "value": "x"}]}],
            "op must be",
        ),
        (
            [{"event": "Hangup", "conditions": [{"header": "Channel", "op": "regex", "value": "("}]}],
            "not valid",
        ),
        ([{"event": "Hangup", "conditions": [{"header": "bad header", "value": "x"}]}], "header name"),
        ([{"event": "Hangup"}] * 101, "at most 100"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(raw: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_rules(raw)


def test_settings_pushed_to_the_agent_are_validated() -> None:
    settings = agent_settings({"trunks": ["trunk-*"], "guard": {"enabled": True, "max_failures": 5}})
    assert settings["trunks"] == ["trunk-*"] and settings["events_map"] == []
    assert settings["guard"] == {
        "enabled": True,
        "max_failures": 5,
        "window_seconds": 600,
        "ban_seconds": 600,
        "allow": [],
    }
    with pytest.raises(InvalidInput, match="max_failures"):
        guard_settings({"max_failures": 0})


def test_agent_config_from_file_and_options(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "agent.toml"
    path.write_text(
        'hub = "https://hub.example.com/base"\ntoken = "cbagent_x"\n[ami]\nusername = "u"\nsecret = "s"\n'
    )
    cfg = build(path, ami_port=5039)
    assert cfg.link_url == "wss://hub.example.com/base/agent/v1/link"
    assert cfg.ami_port == 5039 and cfg.ami_username == "u"
    assert "cbagent_x" not in repr(cfg) and "'s'" not in repr(cfg)
    with pytest.raises(AgentConfigError, match="hub"):
        build(None, hub="ftp://x", token="cbagent_x", ami_username="u", ami_secret="s")
    # A batch the hub would refuse as a whole (more items than it takes) is refused at start.
    with pytest.raises(AgentConfigError, match="batch_size"):
        build(None, hub="http://h", token="cbagent_x", ami_username="u", ami_secret="s", batch_size=50_000)
    path.write_text('hub = "http://h"\ntoken = "t"\nhub_typo = 1\n')
    with pytest.raises(AgentConfigError, match="unknown setting"):
        build(path)
