"""What the organization manager and store refuse, in words: English msgids (see
``sidecar.identity.refusals``: English in errors and logs, the reader's language in the console).
A field's refusal is ``{field}: {reason}``, both parts said in the reader's language.
"""

from __future__ import annotations

from sidecar.i18n import N_

NOT_FOUND = N_("Unable to locate the resource")
FIELD = N_("{field}: {reason}")
NOT_AN_OBJECT = N_("the body must be a JSON object")
UNKNOWN_FIELDS = N_("unknown field(s): {fields}")
ID_NOT_UUID = N_("id: must be a UUID")
ID_FIXED = N_("id: cannot be changed")
NO_SUCH_DOMAIN = N_("the organization has no such domain")
LABEL_EMPTY = N_("must be a non-empty string")
LABEL_TOO_LONG = N_("at most {max} printable characters")
BAD_SLUG = N_("lower-case letters, digits and inner '-', 1 to 63 characters (e.g. acme-corp)")
DOMAIN_EMPTY = N_("each domain must be a non-empty string")
NOT_A_DOMAIN = N_("{value} is not a domain name (e.g. example.com)")
INVALID_DOMAIN = N_("{value} is not a valid domain name")
ONE_LABEL = N_("{value}: a domain needs at least two labels")
DOMAINS_NOT_A_LIST = N_("must be a list of domain names")
TOO_MANY_DOMAINS = N_("at most {max} domains")
# The store's refusals (``storage/sql/organizations.py``).
DOMAIN_CLAIMED = N_("a domain is already claimed by an organization")
TAKEN_SLUG = N_("an organization with this slug already exists")
TAKEN_ID = N_("an organization with this id already exists")
HAS_MEMBERS = N_("the organization still has identities: move or delete them first")

REASONS = (
    LABEL_EMPTY,
    LABEL_TOO_LONG,
    BAD_SLUG,
    DOMAIN_EMPTY,
    NOT_A_DOMAIN,
    INVALID_DOMAIN,
    ONE_LABEL,
    DOMAINS_NOT_A_LIST,
    TOO_MANY_DOMAINS,
)
"""A field's reasons (``InvalidOrganization``), said after the field's name."""
REFUSALS = (
    NOT_FOUND,
    NOT_AN_OBJECT,
    UNKNOWN_FIELDS,
    ID_NOT_UUID,
    ID_FIXED,
    NO_SUCH_DOMAIN,
    DOMAIN_CLAIMED,
    TAKEN_SLUG,
    TAKEN_ID,
    HAS_MEMBERS,
)
