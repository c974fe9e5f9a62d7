"""The PII filter on planted personal data (must go) and on ordinary text (must stay as it is)."""

import pytest

from fusionrec.config import PrivacySettings
from fusionrec.privacy import PiiFilter

pytestmark = pytest.mark.unit

# (text, entity, the personal data planted in it)
POSITIVES = [
    ("Write to anna.k+news@mail.example.co.uk today", "EMAIL_ADDRESS", "anna.k+news@mail.example.co.uk"),
    ("contact: bob_smith99@gmail.com", "EMAIL_ADDRESS", "bob_smith99@gmail.com"),
    ("Replies go to x.y@sub.domain.org.", "EMAIL_ADDRESS", "x.y@sub.domain.org"),
    ("Call +44 20 7946 0958 after six", "PHONE_NUMBER", "+44 20 7946 0958"),
    ("my cell is (212) 555-0187", "PHONE_NUMBER", "(212) 555-0187"),
    ("Berlin office +49 30 901820", "PHONE_NUMBER", "+49 30 901820"),
    ("Paris: +33 1 42 68 53 00", "PHONE_NUMBER", "+33 1 42 68 53 00"),
    ("WhatsApp +91 98765 43210", "PHONE_NUMBER", "+91 98765 43210"),
    ("card 4111 1111 1111 1111 exp 12/29", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("paid with 5500-0000-0000-0004", "CREDIT_CARD", "5500-0000-0000-0004"),
    ("amex 378282246310005 declined", "CREDIT_CARD", "378282246310005"),
    ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
    ("send to GB82WEST12345698765432", "IBAN_CODE", "GB82WEST12345698765432"),
    ("account FR14 2004 1010 0505 0001 3M02 606.", "IBAN_CODE", "FR14 2004 1010 0505 0001 3M02 606"),
    ("logged in from 192.168.0.17", "IP_ADDRESS", "192.168.0.17"),
    ("resolver 8.8.8.8 was slow", "IP_ADDRESS", "8.8.8.8"),
    ("client 2001:db8:85a3::8a2e:370:7334 connected", "IP_ADDRESS", "2001:db8:85a3::8a2e:370:7334"),
    ("My name is Priya Raman and I loved it", "PERSON", "Priya Raman"),
    ("Mr. Okonkwo called twice", "PERSON", "Okonkwo"),
    ("Great film. Regards, Hannah Schmidt", "PERSON", "Hannah Schmidt"),
    ("Reviewed by Dr. Yuki Tanaka", "PERSON", "Yuki Tanaka"),
    ("I'm Carlos Mendoza and this is my review", "PERSON", "Carlos Mendoza"),
    ("John Smith wrote this review", "PERSON", "John Smith"),
    ("Refunds: contact Maria Garcia", "PERSON", "Maria Garcia"),
    ("Ms. Elena Petrova disagrees", "PERSON", "Elena Petrova"),
]

NEGATIVES = [
    "A robot falls in love on a distant planet.",
    "The year 1995 was a good one for cinema; the film runs 128 minutes.",
    "Room 101 at 10:30, platform 9, ticket 4111 1111 1111 1112 is not a valid card.",
    "ISBN 978-0-306-40615-7, rated 4.5 out of 5 by 1,234 viewers.",
    "Version 2.10 of the director's cut was restored in 4K.",
    "The Mask (1994) grossed $351 million worldwide.",
    "Led by Woody, Andy's toys live happily in his room until Andy's birthday brings Buzz Lightyear onto the scene.",
    "A burger-loving hit man, his philosophical partner and a washed-up boxer converge in this crime caper.",
]


@pytest.fixture(scope="module")
def pii():
    return PiiFilter(PrivacySettings())


@pytest.mark.parametrize(("text", "entity", "planted"), POSITIVES)
def test_planted_pii_is_found_and_replaced(pii, text, entity, planted):
    found = [f for f in pii.find(text) if f.entity == entity]
    assert any(f.start <= text.index(planted) and f.end >= text.index(planted) + len(planted) for f in found), found
    redacted = pii.redact(text)
    assert planted not in redacted and f"<{entity}>" in redacted


@pytest.mark.parametrize("text", NEGATIVES)
def test_ordinary_text_is_left_alone(pii, text):
    assert pii.redact(text) == text


def test_luhn_invalid_card_numbers_are_not_cards(pii):
    assert not [f for f in pii.find("ref 4111 1111 1111 1112") if f.entity == "CREDIT_CARD"]


def test_iban_with_a_wrong_checksum_is_not_an_iban(pii):
    assert not [f for f in pii.find("send to GB00WEST12345698765432") if f.entity == "IBAN_CODE"]


def test_entities_can_be_switched_off(pii):
    only_email = PiiFilter(PrivacySettings(entities=("EMAIL_ADDRESS",)))
    text = "Mail a@example.com, card 4111 1111 1111 1111"
    assert only_email.redact(text) == "Mail <EMAIL_ADDRESS>, card 4111 1111 1111 1111"


def test_empty_and_missing_text_pass_through(pii):
    assert pii.redact(None) is None and pii.redact("") == ""
    assert pii.redact_many(["a@example.com", None]) == ["<EMAIL_ADDRESS>", None]


NO_NETWORK = """
import socket

def refuse(*args, **kwargs):
    raise AssertionError("the PII filter tried to reach the network")

socket.create_connection = socket.getaddrinfo = refuse
socket.socket.connect = socket.socket.connect_ex = refuse
from fusionrec.privacy import PiiFilter  # imported and built with the network refused
print(PiiFilter().redact("x@newdomain.example.com, call +44 20 7946 0958"))
"""


def test_no_network_is_needed():
    """In a fresh process, so that nothing loaded by earlier tests (a public-suffix list, a recognizer) hides a
    download: the filter is imported, built and used with every socket refused."""
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", NO_NETWORK],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "0", "TLDEXTRACT_CACHE": "/nonexistent"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "<EMAIL_ADDRESS>, call <PHONE_NUMBER>"
