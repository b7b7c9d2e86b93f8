"""fnserve.runtime.redact: what is masked in URLs, texts, mappings and log records, and what is not."""

from __future__ import annotations

import logging
import uuid

import pytest

from fnserve.runtime.redact import (
    MASK,
    is_secret_name,
    redact_data,
    redact_mapping,
    redact_text,
    redact_url,
    register_secrets,
    scrub,
    secret_values,
)

# --- URLs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:secret@host/store", "http://***@host/store"),
        ("s3://KEY:SECRET@bucket/store", "s3://***@bucket/store"),
        ("https://token@host:8443/x", "https://***@host:8443/x"),  # a user name alone may be a token
        ("http://user:p%40ss%2Fw@host/", "http://***@host/"),  # percent-encoded
        ("http://user:p@ss@host/x", "http://***@host/x"),  # a raw @ in the password: the last @ counts
        ("s3://AKIA:wJal/rXUtn@bucket/recs", "s3://***@bucket/recs"),  # a raw / (AWS keys have them)
        ("s3://AKIA:wJal/rXUtn@bucket", "s3://***@bucket"),
        ("http://u:pw@[::1]:8080/x", "http://***@[::1]:8080/x"),
        ("", ""),
        ("not a url", "not a url"),
    ],
)
def test_userinfo_is_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "gs://bucket/models/recs@latest",  # an @ in the path is not userinfo
        "http://host:8080/folder/a@b",  # nor after a port
        "http://[::1]:8080/x",
        "file:///srv/store",
        "memory://store/recs",
        "s3://bucket/recs?versionId=3&X-Amz-Date=20240101T000000Z#part",
    ],
)
def test_urls_without_credentials_are_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_secret_query_parameters_are_masked_and_the_rest_kept() -> None:
    url = (
        "https://bucket.s3.amazonaws.com/recs/1/model.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIA%2F20240101%2Fus-east-1&X-Amz-Date=20240101T000000Z"
        "&X-Amz-Security-Token=FwoGZX&X-Amz-Signature=ab12cd&versionId=7#frag"
    )
    assert redact_url(url) == (
        "https://bucket.s3.amazonaws.com/recs/1/model.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=***&X-Amz-Date=20240101T000000Z"
        "&X-Amz-Security-Token=***&X-Amz-Signature=***&versionId=7#frag"
    )


@pytest.mark.parametrize(
    "name",
    ["Signature", "sig", "token", "access_token", "key", "password", "secret", "API-KEY", "AccountKey"],
)
def test_each_secret_parameter_name(name: str) -> None:
    assert redact_url(f"https://host/x?a=1&{name}=v4lue&b=2") == f"https://host/x?a=1&{name}={MASK}&b=2"


def test_an_empty_secret_parameter_stays_empty() -> None:
    assert redact_url("https://host/x?token=&a=1") == "https://host/x?token=&a=1"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("AWS_SECRET_ACCESS_KEY", True),
        ("AWS_SESSION_TOKEN", True),
        ("aws_access_key_id", True),
        ("client_secret", True),
        ("connection_string", True),
        ("sas_token", True),
        ("passwd", True),
        ("X-Amz-Credential", True),
        ("Authorization", True),
        ("endpoint_url", False),
        ("anon", False),
        ("region_name", False),
        ("versionId", False),
        ("X-Amz-Date", False),
        ("keyword", False),
        ("FNSERVE_STORE", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


# --- texts ------------------------------------------------------------------------------------------


def test_urls_inside_a_text_are_redacted() -> None:
    # aiohttp's ClientResponseError quotes its URL like this
    text = "ClientResponseError: 500, message='Internal Server Error', url='http://u:hunter22@127.0.0.1:9/s'"
    assert redact_text(text) == (
        "ClientResponseError: 500, message='Internal Server Error', url='http://***@127.0.0.1:9/s'"
    )


def test_known_secrets_are_masked_as_is_and_percent_encoded() -> None:
    text = "rejected wJal/rXUtn (sent as wJal%2FrXUtn)"
    assert redact_text(text, {"wJal/rXUtn"}) == "rejected *** (sent as ***)"


def test_the_longest_secret_is_masked_first() -> None:
    assert redact_text("abcdefgh", {"abcd", "abcdefgh"}) == MASK


def test_short_known_values_are_not_hunted_in_free_text() -> None:
    assert redact_text("the user and the key", {"key", "the"}) == "the user and the key"


def test_userinfo_without_a_scheme_is_masked() -> None:
    # botocore, rejecting the bucket name s3fs made of s3://KEY:SECRET@bucket/...
    text = 'Invalid bucket name "AKIAFAKE:wJalr@bucket": Bucket name must match the regex'
    assert redact_text(text) == 'Invalid bucket name "***@bucket": Bucket name must match the regex'


def test_secret_pairs_and_authorization_headers_are_masked() -> None:
    text = (
        "{'Authorization': 'Bearer abc.def', 'X-Api-Key': 'k123'} "
        "AWS4-HMAC-SHA256 Credential=AKIA/2024/us-east-1, SignedHeaders=host, Signature=ab12; token=xyz"
    )
    assert redact_text(text) == (
        "{'Authorization': 'Bearer ***', 'X-Api-Key': '***'} "
        "AWS4-HMAC-SHA256 Credential=***, SignedHeaders=host, Signature=***; token=***"
    )


@pytest.mark.parametrize(
    "text",
    [
        "user_country=NL&hotel_id=991",
        "version 'recs@3' is not served here",
        "the admin API needs 'Authorization: Bearer <token>' (see fn gateway's output)",
        "checkpoint 'recs' has no published version in s3://models/store/recs",
        "x: must be >= 0, got -1",
    ],
)
def test_ordinary_messages_are_unchanged(text: str) -> None:
    assert redact_text(text) == text


# --- mappings and data ------------------------------------------------------------------------------


def test_mappings_mask_secret_keys_at_any_depth_and_redact_urls_in_the_rest() -> None:
    options = {
        "key": "AKIAFAKE",
        "secret": "wJalrSECRET",
        "anon": False,
        "token": None,  # nothing to hide
        "client_kwargs": {"endpoint_url": "http://u:pw@minio:9000", "aws_session_token": "Fwo"},
        "headers": [{"Authorization": "Bearer abc"}],
    }
    assert redact_mapping(options) == {
        "key": MASK,
        "secret": MASK,
        "anon": False,
        "token": None,
        "client_kwargs": {"endpoint_url": "http://***@minio:9000", "aws_session_token": MASK},
        "headers": [{"Authorization": MASK}],
    }
    assert options["key"] == "AKIAFAKE"  # a copy


def test_data_keeps_its_keys_so_a_manifest_still_applies() -> None:
    env = {"envFrom": [{"secretRef": {"name": "creds"}}], "value": "s3://K:wJalr@b/x wJalr"}
    assert redact_data(env, {"wJalr"}) == {
        "envFrom": [{"secretRef": {"name": "creds"}}],
        "value": "s3://***@b/x ***",
    }


def test_secret_values_come_from_urls_options_and_the_environment() -> None:
    found = secret_values(
        "http://user:pw-1234@host/?sig=s1g-value&versionId=3",
        "s3://bucket/plain",
        options={"key": "AKIAFAKE", "client_kwargs": {"secret": "nested-secret", "region": "eu"}, "n": 3},
        environ={
            "AWS_SECRET_ACCESS_KEY": "env-secret-value",
            "XDG_SESSION_CLASS": "user",  # short: an ordinary word, not taken
            "HOME": "/home/someone",
            "PWD": "/work/project",  # the shell's working directory, not a password
            "OLDPWD": "/work",
            "FNSERVE_DATA": "https://u:data-pass@host/d",
        },
    )
    assert found == {"pw-1234", "s1g-value", "AKIAFAKE", "nested-secret", "env-secret-value", "data-pass"}


def test_an_encoded_password_is_known_both_ways() -> None:
    assert secret_values("http://u:p%2Fss1@h/") == {"p%2Fss1", "p/ss1"}


# --- this process's log records ---------------------------------------------------------------------


def test_registered_secrets_never_reach_a_log_record(caplog: pytest.LogCaptureFixture) -> None:
    secret = f"log-secret-{uuid.uuid4().hex[:8]}"
    register_secrets({secret})
    log = logging.getLogger("tests.redact")
    with caplog.at_level(logging.INFO):
        log.info("fetching %s from %s", secret, f"http://reader:{secret}@host/store")
        try:
            raise OSError(f"denied for {secret}")
        except OSError:
            log.exception("load failed")
    assert secret not in caplog.text
    assert "fetching *** from http://***@host/store" in caplog.messages
    assert "OSError: denied for ***" in caplog.text  # the traceback too
    assert scrub(f"a {secret} b") == "a *** b"


def test_a_bad_format_string_is_left_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    register_secrets({"unused-secret-value"})
    record = logging.getLogger("tests.redact").makeRecord(
        "x", logging.INFO, "f", 1, "%d", ("not a number",), None
    )
    assert record.msg == "%d" and record.args == ("not a number",)
