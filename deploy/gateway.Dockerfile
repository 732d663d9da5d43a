# The gateway: directory, DTC Manager and twins (in-process, or through the Docker driver).
# Build from the repository root:
#   docker build -f deploy/gateway.Dockerfile -t dtc-gateway .
# Configuration: the DTC_* variables of the top-level README; durable state in the /data volume.

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
ENV NODE_ENV=production DTC_HOST=0.0.0.0 DTC_MQTT_HOST=0.0.0.0 DTC_DATA_DIR=/data
WORKDIR /app
COPY --from=build /src/package.json /src/package-lock.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/thing-models ./thing-models
COPY --from=build /src/ontology ./ontology
COPY --from=build /src/directory ./directory
# The directory store, the manager's inventory, instances, states and snapshots.
RUN mkdir -p /data && chown node:node /data
VOLUME /data
# The files stay root's (read-only for the gateway); node (uid 1000) is the image's unprivileged user.
USER node
# HTTP (DTC_PORT) and the embedded MQTT broker (DTC_MQTT_PORT, when DTC_MQTT_URL is unset).
EXPOSE 8080 1883
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.DTC_PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM (docker stop) saves every twin's state and exits 0; give it time: docker stop -t 30.
ENTRYPOINT ["node", "--no-node-snapshot", "dist/src/main.js"]
