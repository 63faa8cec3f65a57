#!/bin/sh
# Starts Redis (or Valkey) for tcoder in a container — the Fly app (deploy/fly/redis.fly.toml)
# and the compose stack (deploy/compose/compose.yaml): writes the ACL file from the
# environment's passwords (one user per tcoder role with only its keys: lib/src/redis/acl.rs, a
# test keeps these lines identical to the code), then hands over to the image's entrypoint,
# which drops to the image's user. It listens on every address (Fly's private network is IPv6);
# protected mode is off because nobody can log in without a password (the default user is off).
set -eu
# Where the volume and the configuration are (the test runs this script elsewhere).
DATA="${REDIS_DATA:-/data}"
CONF="${REDIS_CONF:-/etc/redis/redis.conf}"
# The server the image's entrypoint knows (`valkey-server` in Valkey's image).
SERVER="${REDIS_SERVER_NAME:-redis-server}"
for role in INGEST DISPATCHER WORKER CLI; do
  eval "password=\${${role}_REDIS_PASSWORD:-}"
  if [ -z "$password" ]; then
    echo "redis-start: the secret ${role}_REDIS_PASSWORD is not set" >&2
    exit 1
  fi
done
umask 077
cat > "$DATA/users.acl" <<ACL
user default off ~* &* +@all
user ingest on >${INGEST_REDIS_PASSWORD} %RW~tcoder:job:* %RW~tcoder:jobs:* %RW~tcoder:status:* %RW~tcoder:outbox %RW~tcoder:idem:* %RW~tcoder:rate:* %RW~tcoder:watch:* %RW~tcoder:webhook_secret:* %RW~tcoder:leader:* %R~tcoder:apikeys %R~tcoder:apikeys:revoked &* +@all -@dangerous
user dispatcher on >${DISPATCHER_REDIS_PASSWORD} %RW~tcoder:job:* %RW~tcoder:jobs:* %RW~tcoder:status:* %RW~tcoder:outbox %RW~tcoder:machines* %RW~tcoder:capacity:* %RW~tcoder:pool %RW~tcoder:leader:* %R~tcoder:webhook_secret:* &* +@all -@dangerous
user worker on >${WORKER_REDIS_PASSWORD} %RW~tcoder:job:* %RW~tcoder:jobs:* %RW~tcoder:status:* %RW~tcoder:outbox %RW~tcoder:machines* &* +@all -@dangerous
user cli on >${CLI_REDIS_PASSWORD} ~* &* +@all
ACL
exec docker-entrypoint.sh "$SERVER" "$CONF" --dir "$DATA" \
  --aclfile "$DATA/users.acl" --bind '* -::*' --protected-mode no
