"""The core's English on console pages, said in the reader's language: a manager's or a store's
refusal (``sidecar.identity.refusals``, ``sidecar.organization.refusals``) is found again among
their msgids, with its values, and translated where a template prints it. A text that is none of
them (the console's own msgids included) is looked up as it is.
"""

from __future__ import annotations

from sidecar.i18n import Phrase, recognise
from sidecar.identity import refusals as identity_refusals
from sidecar.organization import refusals as organization_refusals

_REFUSALS = (*identity_refusals.REFUSALS, *organization_refusals.REFUSALS)


def said(text: str | Phrase) -> Phrase:
    """``text`` as a phrase to translate: a refusal with its values, else the text as a msgid."""
    if isinstance(text, Phrase):
        return text
    found = recognise(text, _REFUSALS)
    if found is not None:
        return found
    # ``{field}: {reason}``: an organization field's refusal, both parts from the catalogs.
    field = recognise(text, (organization_refusals.FIELD,))
    if field is not None:
        reason = recognise(str(field.params["reason"]), organization_refusals.REASONS)
        if reason is not None:
            return Phrase(organization_refusals.FIELD, field=field.params["field"], reason=reason)
    return Phrase(text)
