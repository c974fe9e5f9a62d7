"""The PII filter: personal data out of free text before it is embedded, logged or monitored.

Built on Microsoft Presidio's pattern recognizers (``presidio-analyzer``), which need no model
download: e-mail addresses, phone numbers (Google's libphonenumber, validated per region), payment
card numbers (Luhn-checked), IBANs (ISO 7064 checksum) and IPv4/IPv6 addresses. Presidio finds
person names only through an NLP model (spaCy/transformers NER) that would have to be downloaded, so
person names are found offline by two rules of our own, registered as Presidio recognizers:

* a cue rule: a capitalised name after an honorific (Mr, Ms, Dr, ...) or a self-introduction or
  sign-off ("my name is", "I am", "contact", "regards,", ...): high confidence;
* a dictionary rule: a capitalised first name followed by a capitalised surname, both on the
  name lists that ship with Faker for ten locales (``NAME_LOCALES``): lower confidence; off with
  ``privacy.person_dictionary: false`` where text is full of fictional names.

Presidio's anonymizer then replaces each finding with ``<ENTITY_TYPE>`` (overlaps resolved by score).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from fusionrec.config import PrivacySettings

HONORIFICS = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mme|Herr|Frau)\.?"
CUES = (
    r"(?:[Mm]y name is|[Mm]y name's|[Ii] am|[Ii]'m|[Tt]his is|[Cc]ontact|[Aa]sk for|[Ss]igned|"
    r"[Rr]egards,|[Ss]incerely,|[Tt]hanks,|[Cc]heers,|[Ff]rom:|[Nn]ame:|[Cc]ustomer:|[Ww]ritten by|[Rr]eviewed by)"
)
# A capitalised word in any Latin script (Álvaro, Ødegaard, O'Neil, Jean-Luc).
_UP, _LOW = "A-ZÀ-ÖØ-ÞĀ-Ž", "a-zß-öø-ÿā-ž"
NAME_WORD = rf"[{_UP}][{_LOW}]+(?:[-'][{_UP}]?[{_LOW}]+)?"
# Faker's census-derived name lists used by the dictionary rule (the benchmark holds out others).
NAME_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "sv_SE", "en_IN", "pt_BR")


@dataclass(frozen=True)
class PiiFinding:
    """One piece of personal data found in a text."""

    entity: str
    start: int
    end: int
    score: float
    text: str


def _offline_email_recognizer():
    """Presidio's e-mail recognizer, validating domains against tldextract's bundled snapshot.

    The stock recognizer asks the network for the public-suffix list on first use; here it must not.
    """
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:  # noqa: D102
            return extract(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


def _name_lists() -> tuple[frozenset[str], frozenset[str]]:
    import importlib

    first, last = set(), set()
    for locale in NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        first.update(getattr(provider, "first_names", ()))
        last.update(getattr(provider, "last_names", ()))
    # Keep real names only: one capitalised word each, at least two letters.
    word = re.compile(rf"^{NAME_WORD}$")
    return (frozenset(n for n in first if word.match(n)), frozenset(n for n in last if word.match(n)))


def _person_recognizers(dictionary: bool):
    from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult

    cue = PatternRecognizer(
        supported_entity="PERSON",
        name="CuedPersonRecognizer",
        patterns=[
            Pattern("honorific name", rf"(?<={HONORIFICS}\s){NAME_WORD}(?:\s{NAME_WORD})?", 0.85),
            Pattern("introduced name", rf"(?<={CUES}\s){NAME_WORD}(?:\s{NAME_WORD}){{0,2}}", 0.85),
        ],
        global_regex_flags=re.DOTALL | re.MULTILINE,  # case-sensitive: a name starts with a capital
    )

    if not dictionary:
        return [cue]
    first_names, last_names = _name_lists()
    pair = re.compile(rf"(?<![\w])({NAME_WORD})\s+((?:[{_UP}]\.\s+)?)({NAME_WORD})(?![\w])")

    class DictionaryPersonRecognizer(EntityRecognizer):
        """First name + surname, both on the census-derived lists."""

        def load(self) -> None:  # noqa: D102
            pass

        def analyze(self, text, entities, nlp_artifacts=None):  # noqa: D102
            out = []
            pos = 0
            while (m := pair.search(text, pos)) is not None:
                if m.group(1) in first_names and m.group(3) in last_names:
                    out.append(RecognizerResult("PERSON", m.start(), m.end(), 0.5))
                    pos = m.end()
                else:  # "Meet Anna Weber": retry from the second word
                    pos = m.start(2) if m.group(2) else m.start(3)
            return out

    return [cue, DictionaryPersonRecognizer(supported_entities=["PERSON"], name="DictionaryPersonRecognizer")]


def _card_recognizer():
    """Presidio's card recognizer plus one pattern for the 12-19 digit numbers of every network
    (Maestro, Mastercard 2-series, 19-digit Visa) that its own patterns miss; all are Luhn-checked."""
    from presidio_analyzer import Pattern
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer

    patterns = [*CreditCardRecognizer.PATTERNS, Pattern("any network (Luhn)", r"\b[2-6](?:[ -]?\d){11,18}\b", 0.3)]
    return CreditCardRecognizer(patterns=patterns)


class PiiFilter:
    """Find and replace personal data in free text.

    Build once and reuse: the recognizers compile their patterns at construction.
    """

    def __init__(self, settings: PrivacySettings | None = None) -> None:
        self.settings = settings or PrivacySettings()

    @cached_property
    def _recognizers(self):
        from presidio_analyzer.predefined_recognizers import (
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
        )

        wanted = set(self.settings.entities)
        available = [
            ("EMAIL_ADDRESS", _offline_email_recognizer),
            ("PHONE_NUMBER", lambda: PhoneRecognizer(supported_regions=self.settings.phone_regions)),
            ("CREDIT_CARD", _card_recognizer),
            ("IBAN_CODE", IbanRecognizer),
            ("IP_ADDRESS", IpRecognizer),
        ]
        recognizers = [make() for entity, make in available if entity in wanted]
        if "PERSON" in wanted:
            recognizers += _person_recognizers(self.settings.person_dictionary)
        return recognizers

    @cached_property
    def _anonymizer(self):
        from presidio_anonymizer import AnonymizerEngine

        return AnonymizerEngine()

    def find(self, text: str) -> list[PiiFinding]:
        """Every finding at or above the score threshold, sorted by position."""
        if not text:
            return []
        found = []
        for rec in self._recognizers:
            for r in rec.analyze(text, rec.supported_entities, None):
                if r.score >= self.settings.score_threshold:
                    found.append(PiiFinding(r.entity_type, r.start, r.end, r.score, text[r.start : r.end]))
        return sorted(found, key=lambda f: (f.start, -f.end))

    def redact(self, text: str | None) -> str | None:
        """The text with each finding replaced by ``<ENTITY_TYPE>``; None and "" pass through."""
        if not text:
            return text
        findings = self.find(text)
        if not findings:
            return text
        from presidio_analyzer import RecognizerResult

        results = [RecognizerResult(f.entity, f.start, f.end, f.score) for f in findings]
        return self._anonymizer.anonymize(text=text, analyzer_results=results).text

    def redact_many(self, texts: list[str | None]) -> list[str | None]:
        """:meth:`redact` over a list."""
        return [self.redact(t) for t in texts]
