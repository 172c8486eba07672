// The authorization server of the OAuth tests: the certified OpenID provider oidc-provider,
// issuing JWT access tokens for a resource (RFC 8707) by client credentials.
//
//   node server.js <port> <keys.json>
//
// keys.json holds the signing keys (private JWKs); the fixture writes a new one and restarts
// this process to rotate them. Clients: "service" (secret "service-secret") may ask for
// contexts:read and contexts:write; "reader" (secret "reader-secret") for contexts:read only;
// "app", a public client, by authorization code with PKCE (devInteractions log anyone in).
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const [port, keysFile] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const keys = JSON.parse(readFileSync(keysFile, "utf8"));
const scopes = ["contexts:read", "contexts:write"];

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "service",
      client_secret: "service-secret",
      grant_types: ["client_credentials"],
      redirect_uris: [],
      response_types: [],
      scope: scopes.join(" "),
    },
    {
      // A public client, as MCP clients are: authorization code with PKCE, no secret.
      client_id: "app",
      token_endpoint_auth_method: "none",
      grant_types: ["authorization_code"],
      response_types: ["code"],
      redirect_uris: ["http://127.0.0.1:9/callback"],
      scope: scopes.join(" "),
    },
    {
      client_id: "reader",
      client_secret: "reader-secret",
      grant_types: ["client_credentials"],
      redirect_uris: [],
      response_types: [],
      scope: "contexts:read",
    },
  ],
  scopes,
  jwks: keys,
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // A token is always for one resource: the one asked for, or this default.
      defaultResource: () => process.env.DEFAULT_RESOURCE || "http://127.0.0.1/",
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: scopes.join(" "),
        audience: resource,
        accessTokenTTL: Number(process.env.TOKEN_TTL || 300),
        accessTokenFormat: "jwt",
        jwt: { sign: { alg: "RS256" } },
      }),
    },
  },
});
provider.proxy = false;
provider.listen(Number(port), "127.0.0.1", () => console.log(`listening ${issuer}`));
