# syntax=docker/dockerfile:1
#
# shipgate image. Runs the TypeScript sources with tsx's loader, exactly like
# `npm start` (tsx is a runtime dependency), so the audit CLI
# (`node --import tsx src/cli/audit-cli.ts`) works in the container as well.
#
#   docker build -t shipgate .
#   docker run --env-file .env -p 3000:3000 shipgate

ARG NODE_IMAGE=node:22-bookworm-slim

# --- production dependencies only ---------------------------------------------
# `npm install` rather than `npm ci`: the lockfile cannot record other platforms' optional
# binaries that some registry mirrors do not serve, and `npm ci` refuses it for that (see .ci/run).
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm install --omit=dev --no-audit --no-fund

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

ENV NODE_ENV=production \
    PORT=3000 \
    SHIPGATE_CONFIG=/app/shipgate.yaml
WORKDIR /app

COPY --from=deps --chown=root:root /app/node_modules ./node_modules
# Sources are owned by root and read-only for the runtime user.
COPY --chown=root:root . .

# The `node` user (uid/gid 1000) of the base image; numeric so that Kubernetes'
# runAsNonRoot can verify it.
USER 1000:1000

EXPOSE 3000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

ENTRYPOINT ["/usr/bin/tini", "--"]
# Same as `npm start` (tsx src/main.ts) without the npm and tsx-CLI wrapper
# processes, so SIGTERM reaches the application directly.
CMD ["node", "--import", "tsx", "src/main.ts"]
