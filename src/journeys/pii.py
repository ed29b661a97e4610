"""Personal data in free text: e-mail addresses and phone numbers found and redacted, or a value masked whole.

Two tools, the same in Python (messages, log lines) and in DuckDB SQL (macros for ingest):

- `redacted` replaces what looks like an e-mail address or a phone number inside a text by
  `<redacted-email>` / `<redacted-phone>` and leaves the rest (attribute values, reasons, errors);
- `shape_masked` keeps only a value's shape: every digit becomes `9`, every other letter or mark `x`,
  white space, punctuation and symbols stay (`Bob@x.de,+1 (415)` -> `xxx@x.xx,+9 (999)`). It is used where a
  value is not known to be safe (quarantined raw text), so nothing of it depends on a pattern matching.

An e-mail is any `local@domain` run, internationalised or with a quoted local part (`"john doe"@x.com`).
A phone is a run of digits and separators (space, `.`, `-`, `/`, `_`, `·`, dashes, brackets) with 7 to 20 digits that
starts with `+` or `(`, carries an extension (`ext. 12`, `x12`, `#12`, `;ext=12`), has at least two
separators, or one separator (not a decimal point) and at least 9 digits; dates (`2026-01-15`,
`15.01.2026`) are not phones. A bare run of digits is not taken for a phone (it is as likely an order
number or an epoch time): a column that holds such phones is caught by its name (`pii_named`).
"""

from __future__ import annotations

import re
import unicodedata

_LOCAL_CLASS = r"""[^\s"<>()\[\]{},;:@\\]"""
_DOMAIN = r"""[^\s"'<>()\[\]{},;:@\\/]+"""
EMAIL_PATTERN = (
    r"""(?:\\?"[^"\r\n,:{}\[\]]{1,64}"@"""
    + _DOMAIN
    + r"""|[^\s"'<>()\[\]{},;:@\\]"""
    + _LOCAL_CLASS
    + "*@"
    + _DOMAIN
    + ")"
)
"""An e-mail address inside text (RE2 and Python syntax alike)."""

_OTHER_SEPARATORS = "\u00a0\u00b7\u2010\u2011\u2013"
"""No-break space, middle dot, hyphen, no-break hyphen, en dash: written literally into both regex dialects."""
PHONE_CANDIDATE_PATTERN = (
    r"(?i)\+?\(?\d[\d\t ().\-/_" + _OTHER_SEPARATORS + r"]{4,}\d(?:\s*(?:;\s*ext=|ext\.?|extension|x|#)\s*\d{1,6})?"
)
"""A run that may be a phone number; `phone_like` decides (RE2 and Python syntax alike)."""

_EXTENSION_PATTERN = r"(?i)\d\s*(?:;\s*ext=|ext\.?|extension|x|#)\s*\d{1,6}$"
_SEP = "[\t ().\\-/_" + _OTHER_SEPARATORS + "]"
MAY_HOLD_PII_PATTERN = (
    r"(?i)@|[+(]\d|\d\s*(?:;\s*ext=|ext|x|#)\s*\d" + rf"|\d{_SEP}+\d+{_SEP}+\d|\d{_SEP}+\d{{5}}|\d{{5}}{_SEP}+\d"
)
"""A cheap test that a text may hold an e-mail or a phone: false for most values, which then skip the work."""
_DATE_PATTERN = r"^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(?:\D|$)"
_PII_NAME_PATTERN = r"(?i)(?:e[-_ ]?mail|phone|telefon|mobile|msisdn|(?:^|[^a-z])(?:tel|cell|fax|sms)(?:[^a-z]|$))"

_EMAIL = re.compile(EMAIL_PATTERN)
_PHONE_CANDIDATE = re.compile(PHONE_CANDIDATE_PATTERN)
_EXTENSION = re.compile(_EXTENSION_PATTERN)
_DATE = re.compile(_DATE_PATTERN)
_PII_NAME = re.compile(_PII_NAME_PATTERN)
_NON_DIGITS = re.compile(r"\D+")


def phone_like(candidate: str) -> bool:
    """True when a run matched by PHONE_CANDIDATE_PATTERN is taken for a phone number (see the module doc)."""
    digits = sum(c.isdigit() for c in candidate)
    if not 7 <= digits <= 20 or _DATE.search(candidate):
        return False
    if candidate.startswith(("+", "(")) or _EXTENSION.search(candidate):
        return True
    seps = _NON_DIGITS.findall(candidate)
    return len(seps) >= 2 or (len(seps) == 1 and seps[0] not in (".", ",") and digits >= 9)


def redacted(text: str) -> str:
    """`text` with every e-mail address and phone number in it replaced by `<redacted-email>` / `<redacted-phone>`."""
    text = _EMAIL.sub("<redacted-email>", text)
    return _PHONE_CANDIDATE.sub(lambda m: "<redacted-phone>" if phone_like(m.group(0)) else m.group(0), text)


def redacted_names(names: list[str]) -> list[str]:
    """Column or key names as they may be shown: a header that is really a data row must not leak through."""
    return [redacted(n) for n in names]


def shape_masked(text: str) -> str:
    """`text` with every digit as `9` and every other letter or mark as `x`; space, punctuation, symbols kept."""
    return "".join("9" if c.isdigit() else c if c.isspace() or not (c.isalnum() or _is_mark(c)) else "x" for c in text)


def _is_mark(c: str) -> bool:
    return unicodedata.category(c).startswith("M")


def pii_named(name: str) -> bool:
    """True for a column or key whose name says it holds an e-mail or a phone (`Email`, `mobile_no`, `tel`)."""
    return bool(_PII_NAME.search(name))


def _sql_literal(pattern: str) -> str:
    return "'" + pattern.replace("'", "''") + "'"


# Static SQL (patterns only, no values): the same rules as the Python functions above, for set-based use.
SQL_MACROS = f"""
create or replace temp macro journeys_phone_like(c) as
    length(regexp_replace(c, '\\D', '', 'g')) between 7 and 20
    and not regexp_matches(c, {_sql_literal(_DATE_PATTERN)})
    and (
        starts_with(c, '+') or starts_with(c, '(')
        or regexp_matches(c, {_sql_literal(_EXTENSION_PATTERN)})
        or len(regexp_extract_all(c, '\\D+')) >= 2
        or (
            len(regexp_extract_all(c, '\\D+')) = 1
            and regexp_extract(c, '\\D+') not in ('.', ',')
            and length(regexp_replace(c, '\\D', '', 'g')) >= 9
        )
    );

create or replace temp macro journeys_redact_emails(t) as
    regexp_replace(t, {_sql_literal(EMAIL_PATTERN)}, '<redacted-email>', 'g');

-- Most texts hold neither an '@' nor a phone-like run: one regex match spares them the list work.
create or replace temp macro journeys_redact(t) as
    case when t is null or not regexp_matches(t, {_sql_literal(MAY_HOLD_PII_PATTERN)}) then t else list_reduce(
        list_prepend(
            journeys_redact_emails(t),
            list_filter(
                -- Candidates from the text itself (one e-mail pass, not two): an e-mail holds no phone run.
                regexp_extract_all(t, {_sql_literal(PHONE_CANDIDATE_PATTERN)}),
                lambda c: journeys_phone_like(c)
            )
        ),
        lambda acc, c: replace(acc, c, '<redacted-phone>')
    ) end;

create or replace temp macro journeys_mask(t) as
    regexp_replace(regexp_replace(t, '\\p{{Nd}}', '9', 'g'), '[^\\s\\p{{Z}}\\p{{P}}\\p{{S}}9]', 'x', 'g');

create or replace temp macro journeys_redact_json(j) as
    case
        when j is null or not regexp_matches(cast(j as varchar), {_sql_literal(MAY_HOLD_PII_PATTERN)}) then j
        -- Redaction that broke the JSON (an '@' right after a quote): keep only the shape, as a string.
        else coalesce(try_cast(journeys_redact(cast(j as varchar)) as json), to_json(journeys_mask(cast(j as varchar))))
    end;
"""
"""Macros journeys_redact(text), journeys_redact_json(json), journeys_mask(text), journeys_phone_like(run)."""
