# The twin image of the tests, built by buildTwinTestImage (test/docker-engine.ts) into the tests'
# private Docker engine. Users build deploy/twin.Dockerfile instead.
#
# Built on nothing (scratch), from files staged on the host, so that it builds offline in seconds:
# no registry, no base image, no RUN (nothing executes at build time, no package manager). It runs
# only where the host's node binary runs (same architecture, the libraries copied beside it).
#
# The build context (staged in a temp dir by buildTwinTestImage) holds one tree, rootfs/:
#   usr/local/bin/node   the host's node binary (realpath of process.execPath)
#   lib*/, usr/lib*/...  every shared library `ldd` lists for node and for the native addons in
#                        node_modules (better-sqlite3), copied to the same paths, the dynamic
#                        loader (/lib64/ld-linux-*.so.*) included
#   tmp/                 empty, mode 1777
#   app/                 package.json, package-lock.json, dist/, thing-models/, ontology/,
#                        directory/, and node_modules without devDependencies (npm prune
#                        --omit=dev), less what no process loads (*.d.ts, *.map, *.md, native build
#                        intermediates), readable by everyone

FROM scratch

# Settings first, the files last: the legacy builder runs each step in a container, and with vfs a
# container starts with a full copy of the image so far (nothing here; after the COPY, ~250 MB).
ARG NODE_VERSION=unknown
LABEL org.opencontainers.image.title="dtc-twin (test image)" \
      org.opencontainers.image.description="A dtc twin process for the tests: the host's node, from scratch" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dtc.image="twin-test" \
      dtc.node-version="${NODE_VERSION}"
# HOME for libraries that ask for one (os.homedir()): scratch has no /etc/passwd.
ENV NODE_ENV=production HOME=/tmp
WORKDIR /app
# Numeric for the same reason; the files are root's, readable by everyone.
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/node"]
CMD ["--no-node-snapshot", "dist/src/twin-main.js"]

# One COPY, so one layer: with vfs every layer is a full copy of its tree.
COPY rootfs/ /
