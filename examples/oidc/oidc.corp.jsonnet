// Claims -> identity for a generic OpenID Connect provider (mapper_url of provider "corp").
// Providers leave out claims they do not have (picture, given_name, even email_verified), so
// every claim is read only when it is there: a missing one must not fail the sign-in.
local claims = std.extVar('claims');
local has(name) = std.objectHas(claims, name);
{
  identity: {
    traits: {
      [if has('email') then 'email']: claims.email,
      [if has('given_name') then 'name']: { first: claims.given_name },
    },
    // optional:
    [if has('picture') then 'metadata_public']: { picture: claims.picture },
    [if has('iss') then 'metadata_admin']: { upstream_issuer: claims.iss },
    verified_addresses: std.prune([
      if has('email') && std.get(claims, 'email_verified', false) then { via: 'email', value: claims.email },
    ]),
  },
}
