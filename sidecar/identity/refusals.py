"""What the identity manager and the identity store refuse, in words: English msgids with
``{placeholders}``. The errors carry the English (the admin API's ``message``, logs and audit lines
stay English); the console finds the msgid and its values again (``sidecar.i18n.recognise``) and
says it in the reader's language. ``pybabel extract`` collects them (babel.cfg).
"""

from __future__ import annotations

from sidecar.i18n import N_

# Kratos' own text for a missing identity (``herodot.ErrNotFound``).
NOT_FOUND = N_("Unable to locate the resource")
UNKNOWN_CREDENTIAL = N_("unknown credential type {type}")
NO_CREDENTIAL = N_("the identity has no {type} credential")
LAST_FIRST_FACTOR = N_("cannot remove the {type} credential: it is the only first factor left")
NOT_DELETABLE = N_("credentials of type {type} cannot be deleted")
BAD_STATE = N_("state must be active or inactive, not {state}")
NO_ORGANIZATION = N_("organization_id: no organization has this id")
# Kratos 4000009: a password nobody can sign in with.
NO_IDENTIFIERS = N_("Could not find any login identifiers. Did you forget to set them?")
EMPTY_PASSWORD = N_("the password must not be empty")
UNSUPPORTED_HASH = N_("unsupported hashed_password: {error}")
# The store's unique constraints (``storage/sql/identities.py``): what collided, never the value.
TAKEN_IDENTIFIER = N_("an identity with this identifier already exists")
TAKEN_EXTERNAL_ID = N_("an identity with this external_id already exists")
TAKEN_ADDRESS = N_("an identity with this address already exists")
TAKEN_CREDENTIAL = N_("the identity already has a credential of this type")
TAKEN_ID = N_("an identity with this id already exists")

REFUSALS = (
    NOT_FOUND,
    UNKNOWN_CREDENTIAL,
    NO_CREDENTIAL,
    LAST_FIRST_FACTOR,
    NOT_DELETABLE,
    BAD_STATE,
    NO_ORGANIZATION,
    NO_IDENTIFIERS,
    EMPTY_PASSWORD,
    UNSUPPORTED_HASH,
    TAKEN_IDENTIFIER,
    TAKEN_EXTERNAL_ID,
    TAKEN_ADDRESS,
    TAKEN_CREDENTIAL,
    TAKEN_ID,
)
