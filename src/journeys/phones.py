"""Phone numbers to E.164 with libphonenumber (`phonenumbers`), one call per distinct raw value.

Ingest collects the distinct raw phone values of a file from DuckDB, normalises them here in one pass
and joins the result back, so the cost grows with the number of different numbers, not of rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers

# A trailing extension ("ext. 12", "x12", "#12", "extension 12"): not part of who the person is.
_EXTENSION = re.compile(r"(?i)\s*(?:;\s*ext=|ext\.?|extension|x|#)\s*\d+\s*$")
_LETTER = re.compile(r"[^\W\d_]")
_TEL_URI = re.compile(r"(?i)^\s*tel:")


@dataclass(frozen=True)
class Phone:
    """The outcome for one raw value: an E.164 number, or why there is none (never echoing the value)."""

    e164: str | None
    error: str | None = None


def region_code(text: str) -> str:
    """ISO region ("US", "GB") for a configured region or calling code ("1", "+44"); ValueError if unknown."""
    t = str(text).strip().upper()
    if t.lstrip("+").isdigit():
        region = phonenumbers.region_code_for_country_code(int(t.lstrip("+")))
        if region == phonenumbers.UNKNOWN_REGION:
            raise ValueError(f"expected an ISO region such as US or GB, or a country calling code, got {text!r}")
        return region
    if t not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"expected an ISO region such as US or GB, or a country calling code, got {text!r}")
    return t


def normalise(raw: str, region: str) -> Phone:
    """E.164 form of one raw phone number read in `region` (extension dropped), or the reason it has none."""
    main = _EXTENSION.sub("", _TEL_URI.sub("", raw)).strip()
    if _LETTER.search(main):
        return Phone(None, "letters (a vanity number such as 1-800-FLOWERS names a business, not a person)")
    try:
        number = phonenumbers.parse(main, region)
    except phonenumbers.NumberParseException:
        return Phone(None, "text that is not a phone number")
    # Validity is most of libphonenumber's cost per number: asked once per parse, not again for the answer.
    valid = phonenumbers.is_valid_number(number)
    if not valid and main.startswith("00"):
        # "00" is the international prefix of most of the world, though not of the default region
        # (NANP dials 011): a number written that way still says its own country.
        try:
            number = phonenumbers.parse("+" + main[2:], region)
        except phonenumbers.NumberParseException:
            return Phone(None, "text that is not a phone number")
        valid = phonenumbers.is_valid_number(number)
    if not valid:
        return Phone(None, f"a number that is not valid in its numbering plan (read with default region {region})")
    return Phone(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalise_all(raws: Iterable[str], region: str, known: dict[str, Phone] | None = None) -> dict[str, Phone]:
    """normalise() over distinct raw values; `known` (results for `region`) is read first and extended."""
    # Ingest passes one dict per run: the same customers' numbers recur in every file of a source, and
    # libphonenumber (~100-130 us a number) then reads each raw value once per run, not once per file.
    known = {} if known is None else known
    out: dict[str, Phone] = {}
    for raw in dict.fromkeys(raws):
        phone = known.get(raw)
        if phone is None:
            phone = known[raw] = normalise(raw, region)
        out[raw] = phone
    return out
