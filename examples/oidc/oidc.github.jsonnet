// Claims -> identity for GitHub (mapper_url of provider "github"). The claims come from GitHub's
// user API: sub (the numeric user id), email (the primary address), email_verified, name,
// nickname, picture, website; any of them may be missing.
local claims = std.extVar('claims');
{
  identity: {
    traits: {
      [if std.objectHas(claims, 'email') then 'email']: claims.email,
    },
  },
}
