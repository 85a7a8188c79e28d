// SAML attributes to traits (selfservice.methods.saml.config.providers[].mapper_url).
local claims = std.extVar('claims');
local a = claims.attributes;
local first(name) = if std.objectHas(a, name) && std.length(a[name]) > 0 then a[name][0] else null;
local email = if first('mail') != null then first('mail') else claims.sub;
{
  identity: {
    traits: { email: email },
    verified_addresses: [{ via: 'email', value: email }],
    metadata_public: { roles: std.get(a, 'groups', []) },
  },
}
