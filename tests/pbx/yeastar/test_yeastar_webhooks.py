"""Webhook parsing: signatures, replays, malformed and oversized bodies, reference examples."""
# ruff: noqa: E501

from __future__ import annotations

import json

import pytest

from callbridge.domain.errors import AuthenticationFailed, InvalidInput
from callbridge.pbx.yeastar.payloads import (
    CallReport,
    CdrReport,
    ExtensionStatusReport,
    MemberKind,
    MemberStatus,
)
from callbridge.pbx.yeastar.webhooks import (
    DuplicateFilter,
    WebhookMalformed,
    WebhookSignatureInvalid,
    WebhookTooLarge,
    parse_envelope,
    parse_json_envelopes,
    parse_webhook,
    sign,
)

SECRET = "Pugghh14VCb05rtG7WGumbD4hwJPIabc"

# Every example payload in reference §1.4–§1.6, as it travels on the wire.
REFERENCE_EXAMPLES = [  # verbatim wire captures: long lines on purpose
    r'{"type":30011,"sn":"3631B4444099","msg":"{\"call_id\":\"1725446451.243\",\"members\":[{\"inbound\":{\"from\":\"94424722\",\"to\":\"6402\",\"trunk_name\":\"stc\",\"channel_id\":\"PJSIP/trunk-stc-endpoint-0000008f\",\"member_status\":\"BYE\",\"call_path\":\"\"}}]}"}',
    r'{"type":30011,"sn":"3633D2199067","msg":"{\"call_id\":\"1702285525.16\",\"members\":[{\"extension\":{\"number\":\"703\",\"channel_id\":\"PJSIP/703-00000008\",\"member_status\":\"ANSWERED\",\"call_path\":\"\"}}]}"}',
    r'{"type":30011,"sn":"3633D2199067","msg":"{\"call_id\":\"1694612246.86\",\"members\":[{\"extension\":{\"number\":\"700\",\"channel_id\":\"PJSIP/700-00000023\",\"member_status\":\"BYE\",\"call_path\":\"\"}}]}"}',
    r'{"type":30012,"sn":"3631A2124XXX","msg":"{\"call_id\":\"1651057476.362\",\"time_start\":\"2022-04-27 19:04:36\",\"call_from\":\"2005\",\"call_to\":\"2002\",\"call_duration\":24,\"talk_duration\":21,\"src_trunk_name\":\" \",\"dst_trunk_name\":\" \",\"pin_code\":\" \",\"status\":\"ANSWERED\",\"type\":\"Internal\",\"recording\":\"20220427190445-1651057476.362-2005-2002-Internal.wav\",\"did_number\":\" \",\"agent_ring_time\":0}"}',
    r'{"type":30012,"sn":"3633D2199067","msg":"{\"call_id\":\"1702285525.16\",\"time_start\":\"2023-12-11 11:05:25\",\"call_from\":\"703\",\"call_to\":\"0872858652\",\"call_duration\":0,\"talk_duration\":0,\"src_trunk_name\":\"\",\"dst_trunk_name\":\"27872858652_SIP\",\"pin_code\":\"\",\"status\":\"BUSY\",\"type\":\"Outbound\",\"recording\":\"\",\"did_number\":\"\",\"agent_ring_time\":0}"}',
    r'{"type":30015,"sn":"3633D2199067","msg":"{\"call_id\":\"1702287660.000012\",\"reason\":\"NOT found\",\"members\":null}"}',
    r'{"type":30015,"sn":"3633D2199067","msg":"{\"call_id\":\"1702292353.000015\",\"reason\":\"486 Busy Here\",\"members\":[{\"extension\":{\"number\":\"700\",\"channel_id\":\"PJSIP/700-00000014\",\"member_status\":\"BYE\",\"call_path\":\"\"}}]}"}',
    r'{"type":30016,"sn":"3631A2124XXX","msg":"{\"call_id\":\"1648861726.280\",\"members\":[{\"inbound\":{\"from\":\"5503301\",\"to\":\"2002\",\"trunk_name\":\"peer-to-41\",\"channel_id\":\"PJSIP/trunk-peer-to-41-endpoint-000000b5\",\"member_status\":\"ALERT\",\"call_path\":\" \"}}]}"}',
    r'{"type":30008,"sn":"3631A2124XXX","msg":"{\"extension\":\"2002\",\"status\":\"Ringing\"}"}',
    r'{"type":30009,"sn":"3631A2124XXX","msg":"{\"extension\":\"2005\",\"status\":\"business_trip\"}"}',
    r'{"type":30007,"sn":"3631A2124XXX","msg":"{\"extension\":\"2010\",\"kind\":\"Mobile\",\"status\":\"Registered\",\"registered_ip\":\"223.104.45.163\"}"}',
    r'{"type":30010,"sn":"3631A2124XXX","msg":"{\"trunk_name\":\"peering\",\"kind\":\"PJSIP\",\"status\":1,\"registered_ip\":\"112.48.19.183:18211\"}"}',
    '{"type":30033,"sn":"3631A2124788","msg":{"key":"recording_download","result":"success","file":"20250819095658-1755568612.24-2192-2193-Internal.mp3","download_resource_url":"/api/downloadattachment/Recording-X.20.0.X-download-20250822182917-Ib9fcemxhk4X1RRj.mp3","error":""}}',
]


@pytest.mark.parametrize("body", REFERENCE_EXAMPLES)
def test_every_reference_example_parses_through_the_signed_path(body: str) -> None:
    raw = body.encode()
    [message] = parse_webhook(raw, sign(raw, SECRET), SECRET, 64 * 1024)
    assert message.type == json.loads(body)["type"]
    assert message.sn.startswith("363")
    assert isinstance(message.msg, dict) and message.msg


def test_payloads_are_typed() -> None:
    [failed] = parse_json_envelopes(REFERENCE_EXAMPLES[5])
    assert isinstance(failed.payload, CallReport)
    assert failed.payload.members == () and failed.payload.reason == "NOT found"
    [invite] = parse_json_envelopes(REFERENCE_EXAMPLES[7])
    assert isinstance(invite.payload, CallReport)
    member = invite.payload.members[0]
    assert member.kind is MemberKind.INBOUND and member.status is MemberStatus.ALERT
    assert member.from_number == "5503301" and member.call_path == ""  # " " is a blank
    [cdr] = parse_json_envelopes(REFERENCE_EXAMPLES[3])
    assert isinstance(cdr.payload, CdrReport)
    assert cdr.payload.call_type == "internal" and cdr.payload.talk_duration == 21
    assert cdr.payload.src_trunk_name == ""
    [presence] = parse_json_envelopes(REFERENCE_EXAMPLES[9])
    assert isinstance(presence.payload, ExtensionStatusReport)
    [recording] = parse_json_envelopes(REFERENCE_EXAMPLES[12])
    assert recording.payload is None and recording.msg["result"] == "success"


def test_msg_as_object_and_as_string_give_the_same_message() -> None:
    inner = {"extension": "2002", "status": "Ringing"}
    as_string = parse_envelope({"type": 30008, "sn": "X", "msg": json.dumps(inner)})
    as_object = parse_envelope({"type": 30008, "sn": "X", "msg": inner})
    assert as_string.payload == as_object.payload
    assert as_string.dedupe_key == as_object.dedupe_key


def test_forged_signature_is_refused() -> None:
    raw = REFERENCE_EXAMPLES[1].encode()
    with pytest.raises(WebhookSignatureInvalid):
        parse_webhook(raw, sign(raw, "another-secret-another-secret-12"), SECRET)
    tampered = raw.replace(b"703", b"704")
    with pytest.raises(WebhookSignatureInvalid):
        parse_webhook(tampered, sign(raw, SECRET), SECRET)
    with pytest.raises(WebhookSignatureInvalid):
        parse_webhook(raw, None, SECRET)
    with pytest.raises(WebhookSignatureInvalid):
        parse_webhook(raw, "not base64!!", SECRET)
    with pytest.raises(WebhookSignatureInvalid, match="no webhook secret"):
        parse_webhook(raw, sign(raw, ""), "")


def test_signature_errors_are_authentication_errors_others_are_input_errors() -> None:
    assert issubclass(WebhookSignatureInvalid, AuthenticationFailed)
    assert issubclass(WebhookMalformed, InvalidInput)
    assert issubclass(WebhookTooLarge, InvalidInput)


def test_replayed_body_has_the_same_dedupe_key_and_is_caught() -> None:
    raw = REFERENCE_EXAMPLES[1].encode()
    first = parse_webhook(raw, sign(raw, SECRET), SECRET)[0]
    reformatted = json.dumps(json.loads(raw), indent=2).encode()  # byte-different retry
    second = parse_webhook(reformatted, sign(reformatted, SECRET), SECRET)[0]
    assert first.dedupe_key == second.dedupe_key
    dupes = DuplicateFilter(capacity=2)
    assert dupes.seen(first.dedupe_key) is False
    assert dupes.seen(second.dedupe_key) is True
    other = parse_json_envelopes(REFERENCE_EXAMPLES[2])[0]
    assert other.dedupe_key != first.dedupe_key


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"42",
        b'{"sn":"X","msg":"{}"}',
        b'{"type":"abc","sn":"X","msg":"{}"}',
        b'{"type":30011,"sn":"X"}',
        b'{"type":30011,"sn":"X","msg":"{not json"}',
        b'{"type":30011,"sn":"X","msg":"[1,2]"}',
        b'{"type":30011,"sn":"X","msg":"{\\"members\\":[]}"}',
        b'{"type":30011,"sn":"X","msg":"{\\"call_id\\":\\"1.2\\",\\"members\\":[{\\"alien\\":{}}]}"}',
        b'{"type":30011,"sn":"X","msg":"{\\"call_id\\":\\"1.2\\",\\"members\\":\\"x\\"}"}',
        b'{"type":30008,"sn":"X","msg":"{\\"status\\":\\"Idle\\"}"}',
        b"\xff\xfe garbage",
        b"   ",
    ],
)
def test_malformed_bodies_are_refused_with_a_typed_error(body: bytes) -> None:
    with pytest.raises(WebhookMalformed):
        parse_webhook(body, sign(body, SECRET), SECRET)


def test_oversized_body_is_refused_before_anything_else() -> None:
    body = b'{"type":30011,"msg":"' + b"x" * 2000 + b'"}'
    with pytest.raises(WebhookTooLarge):
        parse_webhook(body, None, SECRET, max_bytes=1000)  # no signature needed to refuse


def test_wrong_pbx_serial_is_refused() -> None:
    raw = REFERENCE_EXAMPLES[1].encode()
    with pytest.raises(WebhookMalformed):
        parse_webhook(raw, sign(raw, SECRET), SECRET, expected_sn="SOMEOTHER")
    assert parse_webhook(raw, sign(raw, SECRET), SECRET, expected_sn="3633D2199067")
