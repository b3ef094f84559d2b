// PostGraphile 5 (amber preset, grafserv on node:http) over Kontakt's tables, for bench/compare.sh.
// Run with `node -r ../polyfill.cjs pg5.mjs` on Node 20 (PostGraphile 5 asks for Node 22).
// Settings (environment): DATABASE_URL, PG_SCHEMA=public, PORT, HOST=127.0.0.1, PG_POOL_MAX=10,
// JWT_SECRET (HS256, verified like PostGraphile 4's --jwt-secret: claims become `jwt.claims.*` settings; empty:
// no verification), JWT_AUDIENCE, JWT_ISSUER.
import { createServer } from "node:http";
import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/node";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { PgLazyJWTPreset } from "postgraphile/presets/lazy-jwt";

const env = (name, fallback) => {
    const value = process.env[name] ?? fallback;
    if (value === undefined) throw new Error(`${name} is not set`);
    return value;
};
const port = Number(env("PORT"));
const host = env("HOST", "127.0.0.1");
const jwtSecret = env("JWT_SECRET", "");

/** @type {GraphileConfig.Preset} */
const preset = {
    extends: jwtSecret ? [PostGraphileAmberPreset, PgLazyJWTPreset] : [PostGraphileAmberPreset],
    pgServices: [
        makePgService({
            connectionString: env("DATABASE_URL"),
            schemas: [env("PG_SCHEMA", "public")],
            poolConfig: { max: Number(env("PG_POOL_MAX", "10")) },
        }),
    ],
    // Read-only like the other targets: no generated mutations (PostGraphile 4 runs with --disable-default-mutations).
    disablePlugins: ["PgMutationCreatePlugin", "PgMutationUpdateDeletePlugin"],
    grafserv: {
        port,
        host,
        graphiql: false,
        watch: false,
        ...(jwtSecret && {
            pgJwtSecret: jwtSecret,
            pgJwtVerifyOptions: {
                algorithms: ["HS256"],
                audience: env("JWT_AUDIENCE"),
                issuer: env("JWT_ISSUER"),
            },
        }),
    },
    grafast: { explain: false },
};

const pgl = postgraphile(preset);
const serv = pgl.createServ(grafserv);
const server = createServer();
server.once("listening", () => {
    console.log(`PostGraphile 5 listening on http://${host}:${port}/graphql`);
});
serv.addTo(server).catch((e) => {
    console.error(e);
    process.exit(1);
});
server.listen(port, host);
const stop = () => {
    server.close();
    pgl.release().finally(() => process.exit(0));
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
