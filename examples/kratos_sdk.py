"""sidecar through the official Kratos SDK (pip install ory-kratos-client==25.4.0).

Run it against `sidecar serve` with serve.admin.api_key set from the same variable:
    SIDECAR_SERVE__ADMIN__API_KEY=change-me-to-a-long-random-key python examples/kratos_sdk.py
"""

import os

import ory_kratos_client as k

# Admin API (port 4434). The key is the SDK's "oryAccessToken" API key, sent as
# "Authorization: Bearer <key>"; Configuration(access_token=...) is never sent by these calls.
admin_config = k.Configuration(host="http://127.0.0.1:4434")
admin_config.api_key["oryAccessToken"] = os.environ["SIDECAR_SERVE__ADMIN__API_KEY"]
admin_config.api_key_prefix["oryAccessToken"] = "Bearer"
admin = k.IdentityApi(k.ApiClient(admin_config))

# Public API (port 4433): the base URL includes the prefix.
frontend = k.FrontendApi(k.ApiClient(k.Configuration(host="http://127.0.0.1:4433/.auth")))

for identity in admin.list_identities():
    print("identity", identity.id, identity.traits)
flow = frontend.create_native_registration_flow()
print("registration flow", flow.id)
