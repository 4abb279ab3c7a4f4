# flashgate in a container. Build: docker build -t flashgate .
# Run:   docker run --rm -p 8080:8080 -v $PWD/my.yaml:/etc/flashgate/flashgate.yaml:ro \
#          -e FLASHGATE_LINK_KEY=... flashgate
# The config must listen on 0.0.0.0 inside the container; admin stays on 127.0.0.1 unless admin_token
# is set. (Not built in this project's CI: the build machine has no Docker engine.)

# 1. build and pack: the same tarball `npm pack` makes (dist/ built by prepack, no tests or bench)
FROM node:20-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm pack --silent && mv flashgate-*.tgz /flashgate.tgz

# 2. runtime: the tarball installed globally, production dependencies only
FROM node:20-slim
ENV NODE_ENV=production
COPY --from=build /flashgate.tgz /tmp/flashgate.tgz
RUN npm install -g --omit=dev --no-audit --no-fund /tmp/flashgate.tgz && rm /tmp/flashgate.tgz \
  && mkdir -p /etc/flashgate && cp /usr/local/lib/node_modules/flashgate/conf/example.yaml /etc/flashgate/example.yaml
USER node
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
# The two Node flags flashgate is measured with (README, gateway/node-flags.ts).
ENTRYPOINT ["node", "--max-semi-space-size=64", "--no-memory-reducer", "/usr/local/bin/flashgate"]
CMD ["serve", "--config", "/etc/flashgate/flashgate.yaml"]
