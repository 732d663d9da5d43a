# The twin image: one DT Instance per container (`node dist/src/twin-main.js`), started by the
# gateway's Docker driver. Build from the repository root:
#   docker build -f deploy/twin.Dockerfile -t dtc-twin .
# and name it in a docker package: "artefact": {"image": "dtc-twin"}.

# --- build: dependencies, the TypeScript build, then only the production dependencies ---
FROM node:22-slim AS build
# better-sqlite3 is a native module: npm downloads a prebuilt binary for the platform when there is
# one, and compiles it (python3, make, g++) when there is none.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
# npm install, not npm ci: the lock file lacks other platforms' optional packages (biome, rollup),
# which `npm ci` refuses as "not in sync"; install honours the lock (see .ci/run).
# --ignore-scripts: `prepare` would build before the sources are here; better-sqlite3's own install
# script (prebuilt binary or compile) is run by the rebuild.
RUN npm install --no-audit --no-fund --ignore-scripts \
 && npm rebuild better-sqlite3
COPY . .
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# --- runtime ---
FROM node:22-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json /src/package-lock.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/thing-models ./thing-models
COPY --from=build /src/ontology ./ontology
COPY --from=build /src/directory ./directory
# The files stay root's (read-only for the twin); node (uid 1000) is the image's unprivileged user.
USER node
# node-wot HTTP (DTC_TWIN_PORT) and the management endpoint (DTC_TWIN_MANAGEMENT_PORT); the driver
# sets both, and publishes them or reaches them on the container's network.
EXPOSE 8080 8081
# GET /health of the management endpoint needs no token.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.DTC_TWIN_MANAGEMENT_PORT || 8081) + '/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "--no-node-snapshot", "dist/src/twin-main.js"]
