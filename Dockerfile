# syntax=docker/dockerfile:1
#
# shipgate image: Node 24 LTS running the compiled JavaScript (`npm run build` → dist/), with
# production dependencies only (no TypeScript, no tsx). The audit CLI is
# `node dist/src/cli/audit-cli.js` (`npm run audit-log:dist`) in the container.
#
#   docker build -t shipgate .
#   docker run --env-file .env -p 3000:3000 shipgate

ARG NODE_IMAGE=node:24-bookworm-slim

# --- build: every dependency, compile, then drop the dev dependencies ----------
# `npm install` rather than `npm ci`: the lockfile cannot record other platforms' optional
# binaries that some registry mirrors do not serve, and `npm ci` refuses it for that (see .ci/run).
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm install --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY commands ./commands
COPY workers ./workers
RUN npm run build \
    && npm prune --omit=dev --no-audit --no-fund

# --- runtime ------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# git: the agent gate clones, commits and pushes with the git binary.
# ca-certificates: HTTPS clones. tini: PID 1 that forwards signals and reaps the
# processes the worker spawns (git, repository checks). bubblewrap: the sandbox
# every repository check runs in (SPEC §4; it needs user namespaces, see README
# "Running workers in Kubernetes").
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates tini bubblewrap \
    && rm -rf /var/lib/apt/lists/*

# Stack traces point at the TypeScript lines (dist/ keeps tsc's source maps).
ENV NODE_ENV=production \
    NODE_OPTIONS=--enable-source-maps \
    PORT=3000 \
    SHIPGATE_CONFIG=/app/shipgate.yaml
WORKDIR /app

# Owned by root and read-only for the runtime user. package.json is needed at run time: its
# "type": "module" makes Node load dist/**/*.js as ES modules.
COPY --from=build --chown=root:root /app/package.json ./
COPY --from=build --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /app/dist ./dist
# The default policy (SHIPGATE_CONFIG; compose and Kubernetes mount their own over it) and the
# commented example beside it.
COPY --chown=root:root shipgate.yaml shipgate.example.yaml ./

# The `node` user (uid/gid 1000) of the base image; numeric so that Kubernetes'
# runAsNonRoot can verify it.
USER 1000:1000

EXPOSE 3000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

ENTRYPOINT ["/usr/bin/tini", "--"]
# `npm run start:dist` without the npm wrapper process, so SIGTERM reaches the application directly.
CMD ["node", "dist/src/main.js"]
